"""`jingbao user add|list|scope|demo`: web console accounts, in the service's database."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from bridge.commands.service import DEFAULT_CONFIG  # the service's default config: every subcommand reads the same one
from bridge.config import ConfigError, load_config
from bridge.db import connect_state
from bridge.web.users import Role, UserError, UserStore, ensure_demo_users


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="web console users: add, list")
    usub = p.add_subparsers(dest="user_command", required=True)
    config_help = f"config file (default {DEFAULT_CONFIG})"
    add = usub.add_parser("add", help="create a user; without --password-stdin a random password is made and printed")
    add.add_argument("name", help="login name (letters, digits, _ . @ -)")
    add.add_argument("--role", required=True, choices=[str(r) for r in Role], help="what the user may do")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.add_argument("--responder", help="the jurisdiction responder id this guard/officer account speaks for")
    add.add_argument("--scope", help="at central: the station or 分局 id (of node.region) whose archives the user "
                     "sees; none: the whole region")  # fmt: skip
    add.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    add.set_defaults(func=cmd_user_add)
    ls = usub.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true", help="one JSON object per user")
    ls.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    ls.set_defaults(func=cmd_user_list)
    scope = usub.add_parser("scope", help="set which station or 分局 a user sees at central (node.region's ids)")
    scope.add_argument("name", help="the user")
    which = scope.add_mutually_exclusive_group(required=True)
    which.add_argument("scope", nargs="?", help="a station or 分局 id of the region file")
    which.add_argument("--region", action="store_true", help="the whole region (no scope)")
    scope.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    scope.set_defaults(func=cmd_user_scope)
    demo = usub.add_parser("demo", help="create the demo users that are missing and print their logins (demo only)")
    demo.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    demo.set_defaults(func=cmd_user_demo)


def _store(config_file: Path, scope: str | None = None) -> UserStore:
    """The users of the config's service; with `scope`, which must name a station or 分局 of its region file."""
    config = load_config(config_file)
    if scope is not None:
        from bridge.region import RegionError, region_of

        region = region_of(config)
        if region is None:
            raise UserError(f"{config_file} names no region file (node.region): scopes are the central tier's")
        try:
            region.stations_in(scope)
        except RegionError as e:
            raise UserError(str(e)) from e
    return UserStore(connect_state(config.storage))  # central's users are in its PostgreSQL


def cmd_user_add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password, generated = sys.stdin.readline().rstrip("\r\n"), False
    else:
        password, generated = secrets.token_urlsafe(12), True
    try:
        user = _store(args.config, args.scope).add(args.name, args.role, password, responder_id=args.responder,
                                                   scope=args.scope)  # fmt: skip
    except (ConfigError, UserError) as e:
        print(f"jingbao user add: {e}", file=sys.stderr)
        return 2
    print(f"user {user.name} added with role {user.role}" + (f", scope {user.scope}" if user.scope else ""), file=sys.stderr)
    if generated:
        print(f"password: {password}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    try:
        users = _store(args.config).list()
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    for user in users:
        if args.json:
            print(json.dumps(user.to_dict(), ensure_ascii=False))
        else:
            print(f"{user.name:<20} {user.role:<9} {user.scope or '(region)':<16} {user.responder_id or ''}")
    print(f"{len(users)} user(s)", file=sys.stderr)
    return 0


def cmd_user_scope(args: argparse.Namespace) -> int:
    scope = None if args.region else args.scope
    try:
        user = _store(args.config, scope).set_scope(args.name, scope)
    except (ConfigError, UserError) as e:
        print(f"jingbao user scope: {e}", file=sys.stderr)
        return 2
    print(f"user {user.name} now sees {f'scope {user.scope}' if user.scope else 'the whole region'}", file=sys.stderr)
    return 0


def cmd_user_demo(args: argparse.Namespace) -> int:
    """The demo's logins, one per role; the guard and officer accounts speak for the first guard and chief."""
    from bridge.commands.service import load_setup

    try:
        config, jurisdiction = load_setup(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    first = {role: next((r.id for r in jurisdiction.responders if r.role == role), None) for role in ("guard", "chief")}
    responders = {Role.GUARD: first["guard"], Role.OFFICER: first["chief"]}
    users = ensure_demo_users(connect_state(config.storage), {k: v for k, v in responders.items() if v})
    url = f"http://{config.web.host}:{config.web.port}"
    print(f"demo logins at {url}/login (for this demo on {config.web.host} only):")
    for name, role, password in users:
        print(f"  {role:<9} {name:<10} password {password}")
    return 0
