"""The one command line: `jingbao`, built from the subcommands of bridge/commands/; output meant for other tools
(--json) goes to stdout one JSON object per line, everything for people goes to stderr."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
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


def report_native_crashes() -> None:
    """A crash in a native library (sqlite3, PyAV's libopus, onnxruntime) prints every thread's Python stack to
    stderr, the log, rather than a bare exit -11. Left alone where it is on already (pytest turns it on) or where
    stderr has no file descriptor (the CLI run in-process with its output captured)."""
    if faulthandler.is_enabled():
        return
    with contextlib.suppress(AttributeError, ValueError, RuntimeError):  # no fileno(), UnsupportedOperation, no stderr
        faulthandler.enable()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report_native_crashes()
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
