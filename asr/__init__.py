"""Offline speech recognition engines (Vosk, sherpa-onnx) behind one streaming interface."""
