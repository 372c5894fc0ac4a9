#!/usr/bin/env bash
# Install what jingbao needs on a Debian machine, and nothing that is already there.
# Idempotent: a second run checks and installs nothing. Works as root or as a user with sudo.
# --check: only print the Debian packages that are missing (one line, empty when none) and install nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# command -> Debian package providing it (checked by command, so nothing is installed twice); chromium also prints
# the monthly report to PDF, and the tests read it back with poppler's pdftotext
DEB_TOOLS=(ffmpeg:ffmpeg mosquitto:mosquitto mosquitto_pub:mosquitto-clients pulseaudio:pulseaudio
           paplay:pulseaudio-utils espeak-ng:espeak-ng sox:sox chromium:chromium pdftotext:poppler-utils)
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
# PyAudio has no Linux wheel: pip builds it, which needs a C compiler and libc headers (build-essential) and the
# headers of the Python that makes the venv; Debian's own Python also needs python3-venv for `python -m venv`.
# The archive encodes Opus/FLAC with libsndfile through `soundfile`, built against Debian's libsndfile (below)
ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1 ' || [ -e /usr/lib/x86_64-linux-gnu/libsndfile.so.1 ] \
  || missing+=(libsndfile1)
# PostgreSQL: the shared store where several machines share one (docs/deployment.md); the tests start private
# clusters with its initdb/pg_ctl, which Debian keeps out of PATH in /usr/lib/postgresql/<major>/bin
have initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
have gcc || missing+=(build-essential)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
if ! have "$PYTHON"; then
  missing+=(python3 python3-venv python3-dev)
else
  py_include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -e "$py_include/Python.h" ] || missing+=(python3-dev)
  # Debian ships ensurepip (what venv uses to put pip in) in python3-venv; an existing venv needs neither
  [ -x "$VENV/bin/python" ] || "$PYTHON" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')
if [ "${1:-}" = "--check" ]; then
  echo "${missing[*]}"
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python environment: reinstalled only when pyproject.toml (or how it is installed) changed since the last install.
# soundfile from source uses Debian's libsndfile: the one inside its wheel is built without optimisation (its Opus
# encoder took 3.3x the CPU; the archive's FLAC and its reading go through it; Opus is PyAV's since; docs/performance.md).
PIP_FLAGS=(--no-binary soundfile)
stamp="$VENV/.jingbao-installed"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
want=$( (cat pyproject.toml; echo "${PIP_FLAGS[*]}") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${PIP_FLAGS[@]}" -e '.[test]'
  # an earlier install may have put in soundfile's wheel: the same version is not reinstalled otherwise
  if "$VENV/bin/python" -c 'import _soundfile_data' 2>/dev/null; then
    "$VENV/bin/pip" install -q --force-reinstall --no-deps "${PIP_FLAGS[@]}" soundfile
  fi
  echo "$want" > "$stamp"
fi
