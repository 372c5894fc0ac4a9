"""Where the speech models (and the announcements' voice model) are, and how users with internet get them.

Search order for each model (the first hit wins):
  1. the config key (`asr.vosk_model` / `asr.sherpa_model`) — authoritative: a wrong path is reported, not skipped;
  2. the model's own environment variable (`JINGBAO_VOSK_MODEL` / `JINGBAO_SHERPA_MODEL`) — authoritative too;
  3. `JINGBAO_MODELS`, a folder holding model directories under their official names;
  4. the model cache, `$XDG_CACHE_HOME/jingbao/models` (default `~/.cache/jingbao/models`), where `jingbao model fetch`
     unpacks them;
  5. `../shared/models` (see bridge/shared.py; `JINGBAO_SHARED` overrides it): how this machine and CI find them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from asr.config import AsrConfig
from bridge.shared import shared_dir


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "vosk" | "sherpa": the engine it serves; "tts": the announcements' voice
    dir_name: str  # the official directory name, also the archive's top-level folder
    archive: str  # archive file name on the official download site ("" when `files` are fetched one by one)
    official_base_url: str
    config_key: str
    env_var: str
    required: tuple[tuple[str, ...], ...]  # each entry: alternatives, at least one must exist
    sha256: Mapping[str, str]  # pinned hashes of unpacked files; empty when no trusted hash is known
    files: tuple[str, ...] = ()  # a release of loose files (no archive): each downloaded into dir_name

    def problems(self, path: Path) -> list[str]:
        """What makes `path` not a usable copy of this model (layout only; hashes are checked by fetch)."""
        if not path.is_dir():
            return ["not there" if not path.exists() else "not a directory"]
        return [f"missing {' or '.join(alts)}" for alts in self.required if not any((path / a).is_file() for a in alts)]


# No published sha256 of the Vosk zip or its files could be obtained offline, so the Vosk model is checked by its
# layout only (the engine then refuses a model Kaldi cannot read). The sherpa files are pinned from SOURCE.md.
VOSK = ModelSpec(
    kind="vosk",
    dir_name="vosk-model-small-cn-0.22",
    archive="vosk-model-small-cn-0.22.zip",
    official_base_url="https://alphacephei.com/vosk/models",
    config_key="asr.vosk_model",
    env_var="JINGBAO_VOSK_MODEL",
    required=(
        ("am/final.mdl",),
        ("conf/mfcc.conf",),
        ("conf/model.conf",),
        ("graph/HCLr.fst", "graph/HCLG.fst"),
        ("graph/phones/word_boundary.int",),
        ("ivector/final.ie",),
    ),
    sha256={},
)
SHERPA = ModelSpec(
    kind="sherpa",
    dir_name="sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile",
    archive="sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile.tar.bz2",
    official_base_url="https://github.com/k2-fsa/sherpa-onnx/releases/download/kws-models",
    config_key="asr.sherpa_model",
    env_var="JINGBAO_SHERPA_MODEL",
    required=(
        ("tokens.txt",),
        ("encoder-epoch-12-avg-2-chunk-16-left-64.int8.onnx",),
        ("decoder-epoch-12-avg-2-chunk-16-left-64.onnx",),
        ("joiner-epoch-12-avg-2-chunk-16-left-64.int8.onnx",),
    ),
    sha256={
        "tokens.txt": "72316508d9119696145abc6f1f8cdc46287535c34e5ce7e595f845cb1499cf2e",
        "encoder-epoch-12-avg-2-chunk-16-left-64.int8.onnx": "4ded45b30961270f2a9a64bede4569b324c36d4f3a772c1b35bb70a244150675",
        "decoder-epoch-12-avg-2-chunk-16-left-64.onnx": "fb581d6734511676e246e0dff2fea01b31b0913176cb3ca64576dbab0a177774",
        "joiner-epoch-12-avg-2-chunk-16-left-64.int8.onnx": "f79760052b87239e325f0567c752ad3130b30d92effb847d4307743c20c59a24",
    },
)
# The neural voice of the spoken announcements (dispatch/speech.py): kokoro-onnx's release files, or the Mandarin-only
# copy in ../shared (voices-zh-v1.0.bin, with its vocab.json). The model's sha256 is the one ../shared's SOURCE.md
# gives for the same int8 export; no trusted hash of the 54-voice file was available offline.
TTS = ModelSpec(
    kind="tts",
    dir_name="kokoro-zh-v1.0",
    archive="",
    official_base_url="https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0",
    config_key="dispatch.alerts.announce_model",
    env_var="JINGBAO_TTS_MODEL",
    required=(("kokoro-v1.0.int8.onnx",), ("voices-v1.0.bin", "voices-zh-v1.0.bin")),
    sha256={"kokoro-v1.0.int8.onnx": "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"},
    files=("kokoro-v1.0.int8.onnx", "voices-v1.0.bin"),
)
SPECS: dict[str, ModelSpec] = {VOSK.kind: VOSK, SHERPA.kind: SHERPA, TTS.kind: TTS}


@dataclass(frozen=True)
class ModelLocation:
    spec: ModelSpec
    path: Path | None  # the usable model directory, None when not found
    source: str  # where it was found ("config asr.vosk_model", "env JINGBAO_MODELS", "cache", ...) or ""
    searched: tuple[str, ...]  # every place looked at, with why it did not do, for the message

    @property
    def found(self) -> bool:
        return self.path is not None

    def message(self) -> str:
        """The one clear message for a missing model: where we looked and the three ways to provide it."""
        spec = self.spec
        looked = "".join(f"\n  - {s}" for s in self.searched)
        return (
            f"{spec.kind} model ({spec.dir_name}) not found. Looked in:{looked}\n"
            f"Provide it by one of: the config key `{spec.config_key}: DIR`; the environment variable "
            f"{spec.env_var}=DIR (or JINGBAO_MODELS=FOLDER holding {spec.dir_name}/); "
            f"or download it with `jingbao model fetch --{spec.kind}` (needs internet)."
        )


@dataclass(frozen=True)
class ModelStatus:
    vosk: ModelLocation
    sherpa: ModelLocation

    @property
    def locations(self) -> tuple[ModelLocation, ...]:
        return (self.vosk, self.sherpa)

    def missing_message(self) -> str | None:
        """One message covering every missing model; None when all are found."""
        missing = [loc.message() for loc in self.locations if not loc.found]
        return "\n".join(missing) or None


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "jingbao" / "models"


def shared_models_dir(env: Mapping[str, str] | None = None) -> Path:
    return shared_dir(env) / "models"


def locate(spec: ModelSpec, configured: Path | None = None, env: Mapping[str, str] | None = None) -> ModelLocation:
    env = os.environ if env is None else env
    searched: list[str] = []

    def verdict(path: Path, source: str) -> bool:
        problems = spec.problems(path)
        searched.append(f"{source}: {path}" + (f" ({'; '.join(problems)})" if problems else ""))
        return not problems

    # An explicit setting is what the user asked for: a wrong one is reported, never silently replaced.
    explicit = [(configured, f"config {spec.config_key}"), (env.get(spec.env_var), f"env {spec.env_var}")]
    for value, source in explicit:
        if value:
            path = Path(value).expanduser()
            return ModelLocation(spec, path if verdict(path, source) else None, source, tuple(searched))
    candidates: list[tuple[Path, str]] = []
    if env.get("JINGBAO_MODELS"):
        candidates.append((Path(env["JINGBAO_MODELS"]).expanduser() / spec.dir_name, "env JINGBAO_MODELS"))
    candidates += [(cache_dir(env) / spec.dir_name, "cache"), (shared_models_dir(env) / spec.dir_name, "shared models")]
    for path, source in candidates:
        if verdict(path, source):
            return ModelLocation(spec, path, source, tuple(searched))
    return ModelLocation(spec, None, "", tuple(searched))


def locate_all(config: AsrConfig, env: Mapping[str, str] | None = None) -> ModelStatus:
    """Find both models as `config` and the environment say; the service and `make run` print `missing_message()`."""
    return ModelStatus(vosk=locate(VOSK, config.vosk_model, env), sherpa=locate(SHERPA, config.sherpa_model, env))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
