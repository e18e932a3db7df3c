"""The embedded PostgreSQL's roles, each with a generated password (kept beside the other secrets,
mode 0600) and scram-sha-256 authentication:

* ``postgres``, the superuser: only the launcher uses it, to set up the others;
* ``envstore``, the API's: owns the database and its ``public`` schema, so it can create, drop
  and write the read model (``envstore projection rebuild`` uses it too);
* ``envstore_reader``: may connect and SELECT the read model's tables, including tables the API
  creates later (default privileges), and nothing else.

Passwords are sent to the server as SCRAM verifiers computed here, so the clear text never
appears in a statement the server could log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from envstore.common.local_secrets import read_or_create_secret

SUPERUSER = "postgres"
WRITER = "envstore"
READER = "envstore_reader"
PASSWORD_FILES = {
    SUPERUSER: "postgres-superuser-password",
    WRITER: "postgres-writer-password",
    READER: "postgres-reader-password",
}
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


@dataclass(frozen=True)
class RolePasswords:
    """The roles' passwords, generated once into ``directory``."""

    directory: Path

    def password(self, role: str) -> str:
        return read_or_create_secret(self.directory / PASSWORD_FILES[role])

    def dsn(self, role: str, host: str, port: int, database: str) -> str:
        return f"postgresql://{quote(role, safe='')}:{quote(self.password(role), safe='')}@{host}:{port}/{database}"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a scram-sha-256 password (RFC 5802 / RFC 7677)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def encoded(value: bytes) -> str:
        return base64.b64encode(value).decode()

    return f"SCRAM-SHA-256${iterations}:{encoded(salt)}${encoded(stored_key)}:{encoded(server_key)}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def set_up_roles(superuser: asyncpg.Connection, passwords: RolePasswords, database: str) -> None:
    """Create or update the roles and their rights on ``database`` (``superuser`` is connected to
    it). Idempotent; it also moves tables made by the superuser before roles existed (clusters
    created by earlier versions) to the writer."""
    for role in (SUPERUSER, WRITER, READER):
        verifier = _literal(scram_verifier(passwords.password(role)))
        if role != SUPERUSER and not await superuser.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            try:
                await superuser.execute(f"CREATE ROLE {_identifier(role)} LOGIN")
            except asyncpg.DuplicateObjectError:
                pass  # created concurrently
        await superuser.execute(f"ALTER ROLE {_identifier(role)} LOGIN PASSWORD {verifier}")
    writer, reader, quoted_database = _identifier(WRITER), _identifier(READER), _identifier(database)
    async with superuser.transaction():
        await superuser.execute(f"ALTER DATABASE {quoted_database} OWNER TO {writer}")
        await superuser.execute(f"REVOKE ALL ON DATABASE {quoted_database} FROM PUBLIC")
        await superuser.execute(f"GRANT CONNECT ON DATABASE {quoted_database} TO {reader}")
        await superuser.execute(f"ALTER SCHEMA public OWNER TO {writer}")
        await superuser.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await superuser.execute(f"GRANT USAGE ON SCHEMA public TO {reader}")
        for table in await superuser.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> $1", WRITER
        ):
            await superuser.execute(f"ALTER TABLE public.{_identifier(table['tablename'])} OWNER TO {writer}")
        await superuser.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}")
        await superuser.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {writer} IN SCHEMA public GRANT SELECT ON TABLES TO {reader}"
        )
