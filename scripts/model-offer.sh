#!/usr/bin/env bash
# Before the demo starts: when no speech model is found at all, say so plainly on the terminal and offer
# `jingbao model fetch` (needs internet). The demo runs either way: channels, segmentation and the archive never
# depend on ASR, and utterances stay pending until a model is there.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-config/demo.yaml}
JINGBAO=.venv/bin/jingbao

# `model list` exits 1 when any model is missing (no Mandarin Vosk model is the normal case): only none at all counts
listing=$("$JINGBAO" model list --config "$CONFIG" --json || true)
if grep -q '"found": true' <<<"$listing"; then
  exit 0
fi
cat >&2 <<'MSG'

  No speech model was found, so the demo will run without speech recognition: utterances are archived and stay
  pending, and nothing is dispatched until a model is there.
  To get the official models (Vosk vosk-model-small-cn-0.22 and the sherpa-onnx Mandarin keyword model), run
      .venv/bin/jingbao model fetch        (needs internet; `jingbao model list` shows where models are looked for)

MSG
if [ -t 0 ] && [ -t 2 ]; then
  answer=n
  read -r -t 30 -p "  Download them now? [y/N] " answer >&2 || true
  case $answer in
    [yY]*) "$JINGBAO" model fetch || echo "  model fetch failed: the demo runs without speech recognition" >&2 ;;
  esac
fi
