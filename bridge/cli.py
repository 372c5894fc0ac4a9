"""The one command line: `jingbao`, built from the subcommands of bridge/commands/; output meant for other tools
(--json) goes to stdout one JSON object per line, everything for people goes to stderr."""

from __future__ import annotations

import argparse
import logging
import sys

from bridge.commands import dispatching, models, radios, service, transcribe, users


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jingbao", description="警保联动 bridge: radio channels -> archive -> ASR -> dispatch")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (service, transcribe, models, dispatching, radios, users):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
