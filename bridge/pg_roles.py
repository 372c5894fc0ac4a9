"""PostgreSQL roles per tier (issue 13): who may write the central store and who may only read it.

- the **writer** (`jingbao_central` by default): the central ingest's login (`storage.database_url` of `--role central`).
  It owns the database and the `public` schema, so its migrations create and alter the tables (bridge.db.migrate), and
  it alone inserts, updates and deletes. No superuser, no CREATEROLE: it cannot make itself or anyone else more.
- the **reader** (`jingbao_reader`): search and audit. It may connect and read every table, those the writer creates
  later too (default privileges), and nothing else: no INSERT, UPDATE, DELETE, TRUNCATE, no CREATE in the schema, and
  its sessions are read-only besides (`default_transaction_read_only`), so even a temporary table is refused. Not
  even read: central's logins (`users`, `sessions`: password and token hashes), once central has made them.
- the **recognition workers'** (`jingbao_recognition`, bridge/recognition_node.py): CONNECT, SELECT on the
  utterances and transcripts central holds, and UPDATE of the three columns a claim writes, nothing else. Those grants
  name central's tables, so they are given once central has made them: run the setup again after central's first
  start (it says so when the tables are not there yet).
- PUBLIC (every other role of the server, e.g. another jurisdiction's): no CONNECT to this database.

`setup_roles` is run once per database by an administrator of the server (a superuser, or a role with CREATEROLE that
owns the database), e.g. `jingbao db roles --admin-url postgresql://postgres@/postgres --database jingbao_fenju`;
running it again changes nothing. Passwords are not its business: set them with psql's `\\password <role>`, and
keep them in each client's ~/.pgpass (docs/security.md, "PostgreSQL: a role per tier").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

WRITER = "jingbao_central"
READER = "jingbao_reader"
RECOGNITION = "jingbao_recognition"
CLAIM_COLUMNS = ("asr_worker", "asr_lease_until", "asr_claims")  # what RecognitionQueue writes: the worker's only right
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # an identifier PostgreSQL keeps as written, needing no quotes


@dataclass(frozen=True, slots=True)
class TierRoles:
    database: str
    writer: str = WRITER
    reader: str = READER
    recognition: str = RECOGNITION

    def __post_init__(self) -> None:
        for name in (self.database, self.writer, self.reader, self.recognition):
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a plain PostgreSQL name (lower-case letters, digits and '_')")
        if len({self.writer, self.reader, self.recognition}) < 3:
            raise ValueError("the writer, the reader and the recognition workers must be three roles")


def setup_roles(admin_url: str, roles: TierRoles) -> bool:
    """Create the roles if missing and give the database, its schema and its tables to them as above. `admin_url`:
    any database of the server, as its administrator. False: central has not made its tables yet, so the recognition
    workers' role has no grants on them and the reader may still read the logins' (run it again once central has
    started)."""
    from bridge.db import connect_postgres

    with connect_postgres(admin_url) as admin:
        for role in (roles.writer, roles.reader, roles.recognition):
            if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        admin.execute(f"ALTER ROLE {roles.reader} SET default_transaction_read_only = on")
        admin.execute(f"ALTER DATABASE {roles.database} OWNER TO {roles.writer}")
        admin.execute(f"REVOKE ALL ON DATABASE {roles.database} FROM PUBLIC")
        admin.execute(f"GRANT CONNECT ON DATABASE {roles.database} TO {roles.reader}, {roles.recognition}")
    url = _same_server(admin_url, roles.database)
    with connect_postgres(url) as admin, admin.transaction():
        _in_database(admin, roles)
        workers_granted = _recognition_grants(admin, roles)
        return _logins_withheld(admin, roles) and workers_granted


def _in_database(admin: psycopg.Connection, roles: TierRoles) -> None:
    w, r = roles.writer, roles.reader
    admin.execute(f"ALTER SCHEMA public OWNER TO {w}")
    admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # PostgreSQL 15's default; older servers granted it
    # What an earlier setup made as another role (migrated by the administrator, say) becomes the writer's: its next
    # migration alters those tables and replaces the search's trigger function, which only their owner may do.
    for row in admin.execute(
        "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public' AND tableowner <> %s", (w,)
    ).fetchall():
        admin.execute(f"ALTER TABLE public.{row['name']} OWNER TO {w}")
    for row in admin.execute(
        "SELECT p.oid::regprocedure::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.proowner <> %s::regrole",
        (w,),
    ).fetchall():
        admin.execute(f"ALTER FUNCTION {row['name']} OWNER TO {w}")
    admin.execute(f"GRANT USAGE ON SCHEMA public TO {r}")
    admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}")
    admin.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {w} IN SCHEMA public GRANT SELECT ON TABLES TO {r}")


def _recognition_grants(admin: psycopg.Connection, roles: TierRoles) -> bool:
    """The recognition workers' rights on central's tables, once central's migrations have made them."""
    claims = admin.execute(
        "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = 'node_utterances' AND column_name = ANY(%s)", (list(CLAIM_COLUMNS),)
    ).fetchone()  # fmt: skip
    made = admin.execute("SELECT to_regclass('public.transcripts') IS NOT NULL AS made").fetchone()
    admin.execute(f"GRANT USAGE ON SCHEMA public TO {roles.recognition}")
    if claims["n"] < len(CLAIM_COLUMNS) or not made["made"]:
        return False
    admin.execute(f"GRANT SELECT ON node_utterances, transcripts TO {roles.recognition}")
    admin.execute(f"GRANT UPDATE ({', '.join(CLAIM_COLUMNS)}) ON node_utterances TO {roles.recognition}")
    return True


def _logins_withheld(admin: psycopg.Connection, roles: TierRoles) -> bool:
    """The reader's SELECT on central's logins taken back (the default privileges gave it when they were made)."""
    made = [t for t in ("users", "sessions")
            if admin.execute("SELECT to_regclass(%s) IS NOT NULL AS made", (f"public.{t}",)).fetchone()["made"]]  # fmt: skip
    if made:
        admin.execute(f"REVOKE ALL ON {', '.join(made)} FROM {roles.reader}")
    return len(made) == 2


def _same_server(url: str, database: str) -> str:
    """`url` with its database replaced (a libpq URL or key=value string)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**(conninfo_to_dict(url) | {"dbname": database}))
