"""The benchmarks' own tools (bench/), with the real models."""
