"""The embedded PostgreSQL asks every connection for a scram-sha-256 password: the launcher's
superuser, the API's role that owns the read model, and a reader that may only SELECT it. Each
password is generated once into the data directory (mode 0600); a cluster made by an earlier
version (trust authentication, tables owned by the superuser) is brought under the same rules."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from envstore.launcher.postgres_process import PostgresServer
from envstore.launcher.postgres_roles import PASSWORD_FILES
from envstore.launcher.stack import EmbeddedStack

REFUSED_LOGIN = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


async def connect(server: PostgresServer, user: str, password: str | None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=server.host, port=server.port, user=user, password=password, database=server.database, timeout=5
    )


async def test_every_role_needs_its_own_password(tmp_path: Path) -> None:
    async with PostgresServer(tmp_path / "postgres") as server:
        for role, file_name in PASSWORD_FILES.items():
            secret = tmp_path / file_name
            assert secret.stat().st_mode & 0o777 == 0o600, file_name
            for wrong in (None, "", "password", secret.read_text() + "x"):
                with pytest.raises(REFUSED_LOGIN):
                    await connect(server, role, wrong)
            connection = await connect(server, role, secret.read_text())
            await connection.close()
        superuser = await asyncpg.connect(server.superuser_dsn)
        try:
            stored = await superuser.fetch("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin")
            methods = await superuser.fetch("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
        finally:
            await superuser.close()
    assert {row["rolname"] for row in stored} == set(PASSWORD_FILES)
    assert all(row["rolpassword"].startswith("SCRAM-SHA-256$") for row in stored)
    assert {row["auth_method"] for row in methods} == {"scram-sha-256"}


async def test_the_reader_may_only_read_what_the_writer_makes(tmp_path: Path) -> None:
    async with PostgresServer(tmp_path / "postgres") as server:
        writer = await asyncpg.connect(server.dsn)
        reader = await asyncpg.connect(server.reader_dsn)
        try:
            # Made after the roles were set up, as the API makes the read model at its start.
            await writer.execute("CREATE TABLE build (id bigint PRIMARY KEY, status text)")
            await writer.execute("INSERT INTO build VALUES (1, 'COMPLETED')")
            assert await reader.fetchval("SELECT status FROM build WHERE id = 1") == "COMPLETED"
            for statement in (
                "INSERT INTO build VALUES (2, 'FORGED')",
                "UPDATE build SET status = 'FAILED'",
                "DELETE FROM build",
                "TRUNCATE build",
                "DROP TABLE build",
                "CREATE TABLE planted (x int)",
                "ALTER TABLE build ADD COLUMN x int",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await reader.execute(statement)
            assert await writer.fetchval("SELECT count(*) FROM build") == 1
            # The writer owns the read model: a rebuild drops and recreates it.
            await writer.execute("DROP TABLE build")
        finally:
            await reader.close()
            await writer.close()


async def test_a_cluster_of_an_earlier_version_is_brought_under_passwords(tmp_path: Path) -> None:
    async with PostgresServer(tmp_path / "postgres") as server:
        superuser = await asyncpg.connect(server.superuser_dsn)
        await superuser.execute("CREATE TABLE environment (name text)")  # the superuser's, as before
        await superuser.close()
    hba = tmp_path / "postgres" / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))  # earlier versions' initdb --auth=trust
    async with PostgresServer(tmp_path / "postgres", port=server.port) as reopened:
        with pytest.raises(REFUSED_LOGIN):
            await connect(reopened, "postgres", None)
        writer = await asyncpg.connect(reopened.dsn)
        try:
            assert await writer.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'environment'") == "envstore"
            await writer.execute("INSERT INTO environment VALUES ('kept')")
        finally:
            await writer.close()
    assert "trust" not in "".join(line for line in hba.read_text().splitlines() if not line.startswith("#"))


async def test_the_stack_gives_services_the_writer_and_the_reader(stack: EmbeddedStack) -> None:
    environment = stack.service_environment()
    assert environment["ENVSTORE_DATABASE_URL"] == stack.postgres.dsn
    assert environment["ENVSTORE_READER_DATABASE_URL"] == stack.postgres.reader_dsn
    reader = await asyncpg.connect(stack.postgres.reader_dsn)
    try:
        assert await reader.fetchval("SELECT count(*) >= 0 FROM build")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("DELETE FROM build")
    finally:
        await reader.close()
