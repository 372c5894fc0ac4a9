"""`jingbao model list` and `jingbao model fetch`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from asr.config import AsrConfig
from asr.model_fetch import BASE_URL_ENV, FetchError, fetch
from asr.models import SPECS, ModelSpec, cache_dir, locate_all


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="speech models: where they are, and downloading them")
    msub = p.add_subparsers(dest="model_command", required=True)

    ls = msub.add_parser("list", help="print which models were found where (exit 1 when one is missing)")
    ls.add_argument("--config", type=Path, help="config file whose asr.* model paths to honour")
    ls.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    ls.set_defaults(func=cmd_list)

    fe = msub.add_parser("fetch", help="download, check and unpack the official models (needs internet)")
    fe.add_argument("--vosk", action="store_true", help="the Vosk Mandarin model (vosk-model-small-cn-0.22)")
    fe.add_argument("--sherpa", action="store_true", help="the sherpa-onnx Mandarin keyword/pinyin model")
    fe.add_argument("--tts", action="store_true", help="the Kokoro voice model of the spoken announcements (kokoro-onnx)")
    fe.add_argument("--dest", type=Path, help=f"folder to unpack into (default: {cache_dir()})")
    fe.add_argument("--base-url", help=f"download from this URL prefix instead of the official sites (or set {BASE_URL_ENV})")
    fe.set_defaults(func=cmd_fetch)


def cmd_list(args: argparse.Namespace) -> int:
    asr = AsrConfig()
    if args.config:
        from bridge.config import ConfigError, load_config  # the bridge is only needed when a config is given

        try:
            asr = load_config(args.config).asr
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
    status = locate_all(asr)
    for loc in status.locations:
        if args.json:
            print(json.dumps({"model": loc.spec.kind, "found": loc.found, "path": str(loc.path) if loc.path else None,
                              "source": loc.source, "searched": list(loc.searched)}, ensure_ascii=False))
        elif loc.found:
            print(f"{loc.spec.kind}: {loc.path} (from {loc.source})")
        else:
            print(f"{loc.spec.kind}: not found")
    message = status.missing_message()
    if message and not args.json:
        print(message, file=sys.stderr)
    return 1 if message else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    kinds = [kind for kind in SPECS if getattr(args, kind)] or list(SPECS)
    console = Console(stderr=True)
    failed = 0
    for kind in kinds:
        try:
            path = _fetch_with_bar(console, SPECS[kind], args.dest, args.base_url)
        except FetchError as e:
            print(f"{kind}: {e}", file=sys.stderr)
            failed += 1
        else:
            print(f"{kind}: installed at {path}", file=sys.stderr)
    return 1 if failed else 0


def _fetch_with_bar(console: Console, spec: ModelSpec, dest: Path | None, base_url: str | None) -> Path:
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(spec.archive or spec.dir_name, total=None)
        return fetch(spec, dest, base_url, progress=lambda done, total: bar.update(task, completed=done, total=total))
