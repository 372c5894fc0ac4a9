"""`jingbao ptt` and `jingbao patch`: the radios' control lines and the running service's channel patches.

    jingbao ptt test    --config F --channel C [--seconds S]   key the channel's radio for S seconds, show COR
    jingbao ptt watch   --config F --channel C [--seconds S]   print carrier/COR changes
    jingbao ptt unkey   --config F [--channel C]               force PTT off (systemd ExecStopPost, after a crash)
    jingbao patch [--url U] [--user NAME] list|add A B [--mode live]|remove A B     patches of the running service
                  (an operator login: password from $JINGBAO_PASSWORD, else asked for)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bridge.commands.service import DEFAULT_CONFIG  # the service's default config: every subcommand reads the same one
from bridge.config import ConfigError, load_config
from hardware.lines import Line, LineError, make_line

DEFAULT_URL = "http://127.0.0.1:8080"


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each sets `func`)."""
    ptt = sub.add_parser("ptt", help="radio control lines: key test, COR watch, force unkey")
    psub = ptt.add_subparsers(dest="ptt_command", required=True)
    for name, func, help_text in (
        ("test", cmd_ptt_test, "key the channel's transmitter for a few seconds"),
        ("watch", cmd_ptt_watch, "print carrier/COR changes of the channel's line"),
        ("unkey", cmd_ptt_unkey, "drive PTT off on one channel's line, or on every line"),
    ):
        p = psub.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file (default %(default)s)")
        p.add_argument("--channel", required=name != "unkey", help="channel id")
        if name != "unkey":
            p.add_argument("--seconds", type=float, default=2.0 if name == "test" else 30.0, help="how long")
        p.set_defaults(func=func)

    patch = sub.add_parser("patch", help="channel patches of the running service")
    patch.add_argument("--url", default=DEFAULT_URL, help="service address (default %(default)s)")
    patch.add_argument("--json", action="store_true", help="print the service's JSON answer")
    patch.add_argument(
        "--user", default=os.environ.get("JINGBAO_USER"),
        help="operator account to log in as (default $JINGBAO_USER); password from $JINGBAO_PASSWORD or asked for",
    )
    asub = patch.add_subparsers(dest="patch_command", required=True)
    asub.add_parser("list", help="patches in force").set_defaults(func=cmd_patch_list)
    add = asub.add_parser("add", help="link two channels both ways")
    add.add_argument("a")
    add.add_argument("b")
    add.add_argument("--mode", choices=("utterance", "live"), default="utterance")
    add.set_defaults(func=cmd_patch_add)
    remove = asub.add_parser("remove", help="unlink two channels")
    remove.add_argument("a")
    remove.add_argument("b")
    remove.set_defaults(func=cmd_patch_remove)


# --- ptt -----------------------------------------------------------------------------------------------------


def _lines(args: argparse.Namespace) -> list[Line]:
    config = load_config(args.config)
    chosen = [ch for ch in config.channels if ch.line is not None and (args.channel is None or ch.id == args.channel)]
    if not chosen:
        which = "" if args.channel is None else f" {args.channel!r}"
        raise ConfigError(f"{args.config}: no channel{which} with a line section")
    return [make_line(ch.id, ch.line) for ch in chosen if ch.line is not None]


def _run_line_command(args: argparse.Namespace, body: Any) -> int:
    try:
        lines = _lines(args)
        return asyncio.run(body(lines, args))
    except (ConfigError, LineError) as e:
        print(e, file=sys.stderr)
        return 2


def cmd_ptt_test(args: argparse.Namespace) -> int:
    async def body(lines: list[Line], args: argparse.Namespace) -> int:
        async with lines[0] as line:
            if not line.has_ptt:
                print(f"{line.name}: this line has no PTT output", file=sys.stderr)
                return 1
            print(f"{line.name}: carrier {_carrier_text(line.carrier)}; keying for {args.seconds:g} s", file=sys.stderr)
            line.key()
            try:
                await asyncio.sleep(args.seconds)
            finally:
                line.unkey()
            print(f"{line.name}: unkeyed; carrier {_carrier_text(line.carrier)}", file=sys.stderr)
        return 0

    return _run_line_command(args, body)


def cmd_ptt_watch(args: argparse.Namespace) -> int:
    async def body(lines: list[Line], args: argparse.Namespace) -> int:
        async with lines[0] as line:
            if not line.has_cor:
                print(f"{line.name}: this line has no COR input", file=sys.stderr)
                return 1
            print(f"{line.name}: carrier {_carrier_text(line.carrier)}", file=sys.stderr)
            try:
                async with asyncio.timeout(args.seconds):
                    async for event in line.events():
                        if event.kind == "carrier":
                            stamp = time.strftime("%H:%M:%S", time.localtime(event.ts)) + f".{int(event.ts * 1000) % 1000:03d}"
                            print(f"{stamp} {line.name}: carrier {_carrier_text(event.state)}", flush=True)
            except TimeoutError:
                pass
        return 0

    return _run_line_command(args, body)


def cmd_ptt_unkey(args: argparse.Namespace) -> int:
    async def body(lines: list[Line], args: argparse.Namespace) -> int:
        failed = 0
        for line in lines:
            try:
                await line.open()  # open() drives PTT off
                await line.close()
                print(f"{line.name}: unkeyed", file=sys.stderr)
            except LineError as e:
                print(e, file=sys.stderr)
                failed += 1
        return 1 if failed else 0

    return _run_line_command(args, body)


def _carrier_text(state: bool | None) -> str:
    return "unknown" if state is None else ("UP" if state else "down")


# --- patch (talks to the running service) ------------------------------------------------------------------------


def _request(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _login(args: argparse.Namespace) -> str | None:
    """A session token for --user (the patch routes are for operators), or None to ask without logging in."""
    if not args.user:
        return None
    password = os.environ.get("JINGBAO_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    return _request(args, "POST", "/api/login", {"name": args.user, "password": password})["token"]


def _patch_command(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    try:
        answer = _request(args, method, path, body, token=_login(args))
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("detail", detail)
        if e.code == 401 and not args.user:
            detail += " (log in as an operator: --user NAME, password from $JINGBAO_PASSWORD or asked for)"
        print(f"jingbao patch: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"jingbao patch: cannot reach the service at {args.url} ({e}); is `jingbao run` running?", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
        return 0
    for patch in answer if isinstance(answer, list) else [answer]:
        counts = ", ".join(f"{k} {v}" for k, v in patch["forwarded"].items()) or "nothing relayed yet"
        print(f"{patch['a']} <-> {patch['b']}  ({patch['mode']}, from {patch['origin']}; {counts})")
    return 0


def cmd_patch_list(args: argparse.Namespace) -> int:
    return _patch_command(args, "GET", "/api/patches")


def cmd_patch_add(args: argparse.Namespace) -> int:
    return _patch_command(args, "POST", "/api/patches", {"a": args.a, "b": args.b, "mode": args.mode})


def cmd_patch_remove(args: argparse.Namespace) -> int:
    return _patch_command(args, "DELETE", f"/api/patches/{urllib.parse.quote(args.a)}/{urllib.parse.quote(args.b)}")
