"""The bridge's subcommands: run, config check, segment, archive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.config import ConfigError, load_config

DEFAULT_CONFIG = Path("config/demo.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a config file and print what it would run")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    print(f"  jurisdiction: {config.jurisdiction}")
    print(f"  storage: {config.storage.data_dir} ({config.storage.audio_format})")
    print(f"  broker: {config.broker.host}:{config.broker.port}" + ("" if config.broker.enabled else " (disabled)"))
    print(f"  web: http://{config.web.host}:{config.web.port}")
    for ch in config.channels:
        state = "" if ch.enabled else " (disabled)"
        print(f"  channel {ch.id} [{ch.name}]: source {ch.source.type}{state}")
    return 0
