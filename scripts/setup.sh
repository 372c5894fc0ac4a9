#!/usr/bin/env bash
# Install what jingbao needs on a Debian machine, and nothing that is already there.
# Idempotent: a second run checks and installs nothing. Works as root or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# command -> Debian package providing it (checked by command, so nothing is installed twice)
DEB_TOOLS=(ffmpeg:ffmpeg mosquitto:mosquitto mosquitto_pub:mosquitto-clients pulseaudio:pulseaudio
           paplay:pulseaudio-utils espeak-ng:espeak-ng sox:sox chromium:chromium)
# file -> Debian package: PyAudio's build dependency; a Chinese font so the browser tests' screenshots are legible
DEB_FILES=(/usr/include/portaudio.h:portaudio19-dev /usr/share/fonts/truetype/wqy/wqy-microhei.ttc:fonts-wqy-microhei)

say() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }  # mosquitto lives in /usr/sbin

missing=()
for entry in "${DEB_TOOLS[@]}"; do
  have "${entry%%:*}" || missing+=("${entry#*:}")
done
for entry in "${DEB_FILES[@]}"; do
  [ -e "${entry%%:*}" ] || missing+=("${entry#*:}")
done
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python environment: reinstalled only when pyproject.toml changed since the last install.
stamp="$VENV/.jingbao-installed"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
