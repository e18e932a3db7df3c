"""``deploy/k8s/postgres/init-roles.sh`` against a real PostgreSQL, run the way the postgres
image runs it (on a new cluster, over the local socket, as the superuser), with the passwords
make-secrets.sh generates: the connection strings it writes then log in, the API's role may
create and write the read model, the registry's may only read it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.postgres_process import find_postgresql_bin_directory
from tests.deploy.credentials import run_make_secrets

DEPLOY = Path(__file__).parents[2] / "deploy"
INIT_SCRIPT = DEPLOY / "k8s" / "postgres" / "init-roles.sh"


def as_server_user() -> dict:
    """PostgreSQL refuses to run as root: run its programs as the postgres OS user then."""
    return {"user": pwd.getpwnam("postgres").pw_uid} if os.geteuid() == 0 else {}


@pytest.fixture
def secrets_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    run_make_secrets(DEPLOY / "make-secrets.sh", str(directory))
    return directory


@pytest.fixture
def new_cluster(secrets_directory: Path) -> Iterator[tuple[Path, int, dict[str, str]]]:
    """A cluster as the postgres image makes it (POSTGRES_HOST_AUTH_METHOD=scram-sha-256, the
    superuser's password from its file, the database POSTGRES_DB), listening on the local socket
    and on 127.0.0.1; and the environment the image gives its init scripts."""
    bin_directory = find_postgresql_bin_directory()
    root = Path(tempfile.mkdtemp(prefix="envstore-postgres-init-"))
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("postgres").pw_uid, -1)
    data, port = root / "data", pick_free_port("127.0.0.1")
    # The server's OS user reads the password files (the pod mounts them for it).
    for role in ("superuser", "writer", "reader"):
        shutil.copy(secrets_directory / f"postgres-{role}-password", root / f"{role}-password")
        os.chmod(root / f"{role}-password", 0o644)
    password_file = root / "superuser-password"
    run = {"check": True, "capture_output": True, **as_server_user()}
    subprocess.run(
        [bin_directory / "initdb", "-D", data, "-U", "postgres", f"--pwfile={password_file}",
         "--auth-local=trust", "--auth-host=scram-sha-256"],
        **run,
    )
    subprocess.run(
        [bin_directory / "pg_ctl", "-D", data, "-l", root / "log", "-w",
         "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start"],
        **run,
    )
    try:
        subprocess.run([bin_directory / "createdb", "-h", root, "-p", str(port), "-U", "postgres", "envstore"], **run)
        environment = {
            "PATH": f"{bin_directory}:{os.environ['PATH']}",
            "PGHOST": str(root),
            "PGPORT": str(port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "envstore",
            "POSTGRES_WRITER_PASSWORD_FILE": str(root / "writer-password"),
            "POSTGRES_READER_PASSWORD_FILE": str(root / "reader-password"),
        }
        yield root, port, environment
    finally:
        subprocess.run([bin_directory / "pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True, **as_server_user())
        shutil.rmtree(root, ignore_errors=True)


def local_url(url: str, port: int) -> str:
    """A connection string of make-secrets.sh (host `postgres`) pointed at the test's server."""
    parsed = urlparse(url)
    return parsed._replace(netloc=f"{parsed.username}:{parsed.password}@127.0.0.1:{port}").geturl()


async def test_the_connection_strings_log_in_with_the_rights_of_each_role(
    new_cluster: tuple[Path, int, dict[str, str]], secrets_directory: Path
) -> None:
    root, port, environment = new_cluster
    subprocess.run([str(INIT_SCRIPT)], env=environment, check=True, capture_output=True, **as_server_user())
    writer_url = local_url((secrets_directory / "database-url").read_text().strip(), port)
    reader_url = local_url((secrets_directory / "reader-database-url").read_text().strip(), port)

    writer = await asyncpg.connect(writer_url)
    try:
        # Tables the API creates after the roles exist (its schema at first start).
        await writer.execute("CREATE TABLE builds (id integer PRIMARY KEY, state text)")
        await writer.execute("INSERT INTO builds VALUES (1, 'COMPLETED')")
    finally:
        await writer.close()

    reader = await asyncpg.connect(reader_url)
    try:
        assert await reader.fetchval("SELECT state FROM builds WHERE id = 1") == "COMPLETED"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("INSERT INTO builds VALUES (2, 'FAILED')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("CREATE TABLE mine (id integer)")
    finally:
        await reader.close()

    wrong = urlparse(reader_url)._replace(netloc=f"envstore_reader:not-the-password@127.0.0.1:{port}").geturl()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)
    log = (root / "log").read_text()
    for role in ("writer", "reader"):
        assert (secrets_directory / f"postgres-{role}-password").read_text().strip() not in log
