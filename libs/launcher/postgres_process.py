"""A local PostgreSQL cluster (durable: fsync on), run as a child process.

Used by the launcher and by tests that need a real database::

    async with PostgresServer(tmp_path / "pg") as postgres_server:
        connection = await asyncpg.connect(postgres_server.dsn)

``kill()`` and ``restart()`` simulate a crash and a recovery on the same port
and the same data directory.

Authentication is scram-sha-256 for every connection; the roles and their generated passwords
are in ``postgres_roles`` (``dsn`` is the API's role, ``reader_dsn`` the read-only one).

Running as root
---------------
PostgreSQL refuses to run as root. When we are root, ``initdb`` and
``postgres`` run as an unprivileged OS user (``postgres`` if it exists, else a
system user ``envstore-pg``, created on first use). They are started with
``Popen(user=...)`` rather than ``runuser``: ``runuser`` stays in between as
the parent and would receive our signals, so a SIGKILL would hit it and leave
the real postmaster running.

That user often cannot reach the data directory by its path: pytest's
tmp_path lives under /tmp/pytest-of-root, mode 0700. Opening it up with chmod
does not last: every new pytest session (other engineers run them all the
time) resets /tmp/pytest-of-root to 0700, and PostgreSQL opens files by
absolute path for its whole life (e.g. pg_control at the shutdown
checkpoint). So, when we drop privileges, the postmaster gets the data
directory as an inherited open directory descriptor and is told its path is
``/proc/self/fd/<n>``: the kernel resolves that link straight to the
directory, without checking its ancestors, in the postmaster and in every
backend (they inherit the descriptor). ``SHOW data_directory`` reports that
alias; the log file starts with a line naming the real directory.
``initdb`` runs in a private staging directory under the system temporary
directory and its result is moved into place, which also makes
initialisation all-or-nothing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import asyncpg

from envstore.launcher.local_tls import CertificateFiles
from envstore.launcher.postgres_roles import READER, SUPERUSER, WRITER, RolePasswords, set_up_roles
from envstore.launcher.child_process import (
    ServerProcess,
    DEFAULT_STOP_GRACE_SECONDS,
    ServerProcessError,
    LoggedChildProcess,
    OsUser,
    child_pids,
    describe_failure,
    wait_until_gone,
)
from envstore.launcher.free_ports import pick_free_port

DEBIAN_POSTGRESQL_ROOT = Path("/usr/lib/postgresql")
PREFERRED_OS_USERS = ("postgres",)
CREATED_OS_USER = "envstore-pg"
DEFAULT_DATABASE = "envstore"
LOG_FILE_NAME = "envstore-postgres.log"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 30.0
# Attempts with a fresh port when a port we picked was taken before the
# server could bind it (only when the caller did not ask for a port).
PORT_ATTEMPTS = 3
PORT_TAKEN_MESSAGES = ("could not bind", "Address already in use")
# The server's certificate and key, copied into the data directory when TLS is on.
SERVER_CERTIFICATE = "server.crt"
SERVER_KEY = "server.key"
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_SOCKET_PATH = 107


class PostgresServerError(ServerProcessError):
    """PostgreSQL could not be found, initialised or started."""


def find_postgresql_bin_directory() -> Path:
    """The directory holding ``initdb`` and ``postgres``.

    Debian keeps them off PATH, in /usr/lib/postgresql/<version>/bin; the
    highest version wins. PATH is the fallback (other distributions, macOS).
    """

    def has_server_programs(directory: Path) -> bool:
        return (directory / "initdb").is_file() and (directory / "postgres").is_file()

    def version_key(bin_directory: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bin_directory.parent.name))

    debian_directories = sorted(
        (d for d in DEBIAN_POSTGRESQL_ROOT.glob("*/bin") if has_server_programs(d)),
        key=version_key,
    )
    if debian_directories:
        return debian_directories[-1]
    initdb_on_path = shutil.which("initdb")
    if initdb_on_path and has_server_programs(Path(initdb_on_path).resolve().parent):
        return Path(initdb_on_path).resolve().parent
    raise PostgresServerError(
        "PostgreSQL server programs (initdb, postgres) not found in "
        f"{DEBIAN_POSTGRESQL_ROOT}/*/bin nor on PATH; install them with `apt-get install postgresql`"
    )


def _unprivileged_os_user(requested_name: str | None) -> OsUser | None:
    """The OS user to run PostgreSQL as; None means "as ourselves" (we are not root)."""
    if requested_name is not None:
        return OsUser.lookup(requested_name)
    if os.geteuid() != 0:
        return None
    for name in (*PREFERRED_OS_USERS, CREATED_OS_USER):
        try:
            return OsUser.lookup(name)
        except KeyError:
            continue
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CREATED_OS_USER],
        capture_output=True,
        text=True,
    )
    # Exit status 9: another process created it meanwhile.
    if created.returncode not in (0, 9):
        raise PostgresServerError(f"could not create OS user {CREATED_OS_USER}: {created.stderr.strip()}")
    return OsUser.lookup(CREATED_OS_USER)


class PostgresServer(ServerProcess):
    """A PostgreSQL server for ``data_directory``, listening on TCP ``host:port``.

    The cluster is created with ``initdb`` on first start (scram-sha-256
    authentication, superuser ``postgres``); the database ``envstore`` and the
    roles are created if missing. Passwords are generated into
    ``secrets_directory`` (default: the data directory's parent, beside the
    stack's other secrets). ``port=None`` picks a free port on the first start
    and keeps it for every restart.
    """

    log_file_name = LOG_FILE_NAME

    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        database: str = DEFAULT_DATABASE,
        os_user: str | None = None,
        bin_directory: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
        secrets_directory: Path | None = None,
        tls: CertificateFiles | None = None,
    ) -> None:
        self.data_directory = Path(data_directory).absolute()
        # TLS for every TCP connection (``hostssl`` only), clients verifying ``tls.authority``.
        self.tls = tls
        self.passwords = RolePasswords(Path(secrets_directory or self.data_directory.parent).absolute())
        self.host = host
        self._port = port
        self.database = database
        self._requested_os_user = os_user
        self._bin_directory = bin_directory
        self.startup_timeout = startup_timeout
        self.stop_grace_seconds = stop_grace_seconds
        self._child: LoggedChildProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("the port is chosen when the server first starts; start it first")
        return self._port

    @property
    def dsn(self) -> str:
        """The API's role: owns the database, writes the read model."""
        return self._with_tls(self.passwords.dsn(WRITER, self.host, self.port, self.database))

    @property
    def reader_dsn(self) -> str:
        """A role that may only read the read model's tables."""
        return self._with_tls(self.passwords.dsn(READER, self.host, self.port, self.database))

    @property
    def superuser_dsn(self) -> str:
        return self._with_tls(self.passwords.dsn(SUPERUSER, self.host, self.port, self.database))

    def _with_tls(self, dsn: str) -> str:
        """With TLS, a client checks the server's certificate and name against the local CA."""
        if self.tls is None:
            return dsn
        return f"{dsn}?sslmode=verify-full&sslrootcert={quote(str(self.tls.authority), safe='/')}"

    def _client_tls(self) -> ssl.SSLContext | None:
        """The launcher's own connections: verified TLS when the server requires it."""
        if self.tls is None:
            return None
        return ssl.create_default_context(cafile=str(self.tls.authority))


    async def start(self) -> None:
        if self.is_running:
            raise PostgresServerError(f"PostgreSQL is already running (pid {self.pid})")
        bin_directory = self._bin_directory or find_postgresql_bin_directory()
        os_user = await asyncio.to_thread(_unprivileged_os_user, self._requested_os_user)
        await asyncio.to_thread(self.data_directory.mkdir, parents=True, exist_ok=True)
        if not (self.data_directory / "PG_VERSION").exists():
            await self._initdb(bin_directory, os_user)

        await asyncio.to_thread(self._configure_tls, os_user)
        port_is_ours_to_choose = self._port is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._port if self._port is not None else pick_free_port(self.host)
            child, data_path_for_server = self._spawn_postgres(bin_directory, port, os_user)
            self._child = child
            try:
                await self._wait_until_accepting(child, port, data_path_for_server)
            except PostgresServerError:
                await self._kill_process_tree(child)
                port_was_taken = any(message in child.log_text() for message in PORT_TAKEN_MESSAGES)
                if port_is_ours_to_choose and port_was_taken and attempt < PORT_ATTEMPTS:
                    continue
                raise
            except BaseException:
                await self._kill_process_tree(child)
                raise
            self._port = port
            break
        await self._create_database_if_missing()
        await self._set_up_roles()

    def _configure_tls(self, os_user: OsUser | None) -> None:
        """With TLS: the certificate and key in the data directory (the key readable by the
        server's user only, as PostgreSQL demands) and every TCP rule ``hostssl``, so a plaintext
        connection is refused. Without: the rules back to ``host``. Before the server starts."""
        hba = self.data_directory / "pg_hba.conf"
        lines = hba.read_text().splitlines(keepends=True)
        wanted, unwanted = ("hostssl", "host") if self.tls is not None else ("host", "hostssl")
        changed = [
            re.sub(rf"^{unwanted}(\s)", rf"{wanted}\1", line) if not line.lstrip().startswith("#") else line
            for line in lines
        ]
        if changed != lines:
            hba.write_text("".join(changed))
        if self.tls is None:
            return
        for source, name in ((self.tls.certificate, SERVER_CERTIFICATE), (self.tls.key, SERVER_KEY)):
            target = self.data_directory / name
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as written:
                written.write(source.read_bytes())
            os.chmod(target, 0o600)
            if os_user is not None:
                os.chown(target, os_user.uid, os_user.gid)

    async def _initdb(self, bin_directory: Path, os_user: OsUser | None) -> None:
        """Create the cluster in a staging directory, then move it into place.

        A failed or interrupted initdb thus never leaves a half-made cluster
        that a later start would take for a real one.
        """
        if any(self.data_directory.iterdir()):
            raise PostgresServerError(
                f"{self.data_directory} is neither empty nor a PostgreSQL data directory (no PG_VERSION)"
            )
        # mkdtemp's directory is private (0700); the cluster goes one level
        # down so that the directory renamed into place is initdb's own.
        staging_parent = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="envstore-initdb-"))
        staging_directory = staging_parent / "cluster"
        try:
            staging_directory.mkdir(mode=0o700)
            # initdb reads the superuser's password from a file only it (and we) can read.
            password_file = staging_parent / "superuser-password"
            descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as written:
                written.write(self.passwords.password(SUPERUSER) + "\n")
            if os_user is not None:
                os_user.chown(staging_parent)
                os_user.chown(staging_directory)
                os_user.chown(password_file)
            argv = [
                str(bin_directory / "initdb"),
                "-D", str(staging_directory),
                "-U", SUPERUSER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                # Explicit locale: the host's LANG may name a locale that is
                # not generated, which makes initdb fail.
                "--encoding=UTF8",
                "--locale=C",
            ]
            completed = await asyncio.to_thread(
                subprocess.run,
                argv,
                capture_output=True,
                text=True,
                cwd=staging_directory,
                **(os_user.popen_identity() if os_user else {}),
            )
            if completed.returncode != 0:
                raise PostgresServerError(
                    f"initdb failed with status {completed.returncode}:\n"
                    f"{(completed.stdout + completed.stderr)[-4000:]}"
                )
            await asyncio.to_thread(self._move_cluster_into_place, staging_directory, os_user)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging_parent, ignore_errors=True)

    def _move_cluster_into_place(self, staging_directory: Path, os_user: OsUser | None) -> None:
        try:
            # Replaces the empty data directory in one step, keeping owners and modes.
            os.rename(staging_directory, self.data_directory)
            return
        except OSError as error:
            # EXDEV: another file system; EBUSY: the data directory is a mount point.
            if error.errno not in (errno.EXDEV, errno.EBUSY):
                raise
        shutil.copytree(staging_directory, self.data_directory, symlinks=True, dirs_exist_ok=True)
        if os_user is not None:
            for directory, _subdirectories, files in os.walk(self.data_directory):
                os_user.chown(Path(directory))
                for name in files:
                    os.chown(Path(directory) / name, os_user.uid, os_user.gid, follow_symlinks=False)
        os.chmod(self.data_directory, 0o700)

    def _spawn_postgres(
        self, bin_directory: Path, port: int, os_user: OsUser | None
    ) -> tuple[LoggedChildProcess, str]:
        """Start the postmaster; returns it and the data directory path it was given."""
        if os_user is None:
            data_path_for_server = str(self.data_directory)
            return self._spawn_postgres_at(bin_directory, port, data_path_for_server, None, ()), data_path_for_server
        # See the module docstring: the directory is handed over open, and
        # named through /proc so that its ancestors' permissions do not matter.
        directory_descriptor = os.open(self.data_directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            data_path_for_server = f"/proc/self/fd/{directory_descriptor}"
            child = self._spawn_postgres_at(
                bin_directory, port, data_path_for_server, os_user, (directory_descriptor,)
            )
        finally:
            os.close(directory_descriptor)  # the child has its own copy
        return child, data_path_for_server

    def _spawn_postgres_at(
        self,
        bin_directory: Path,
        port: int,
        data_path_for_server: str,
        os_user: OsUser | None,
        pass_fds: tuple[int, ...],
    ) -> LoggedChildProcess:
        socket_path = f"{data_path_for_server}/.s.PGSQL.{port}"
        # Clients here use TCP; the Unix socket is a convenience for psql.
        # A deep directory can exceed the socket path limit, which would make
        # the server refuse to start: then it listens on TCP only.
        socket_directory = data_path_for_server if len(socket_path) <= MAX_UNIX_SOCKET_PATH else ""
        argv = [
            str(bin_directory / "postgres"),
            "-D", data_path_for_server,
            "-h", self.host,
            "-p", str(port),
            "-k", socket_directory,
            # TLS (files relative to the data directory; pg_hba.conf admits TCP only over it).
            *(["-c", "ssl=on", "-c", f"ssl_cert_file={SERVER_CERTIFICATE}", "-c", f"ssl_key_file={SERVER_KEY}"] if self.tls else []),
            # PostgreSQL's durable defaults (fsync, synchronous_commit, full_page_writes) are
            # kept: with fsync off a power loss can corrupt the whole cluster, not only lose the
            # last commits.
        ]
        return LoggedChildProcess.spawn(
            argv,
            self.log_path,
            run_as=os_user,
            # Somewhere any user may be: PostgreSQL chdirs back to its
            # starting directory while locating its own executable.
            cwd=Path("/"),
            pass_fds=pass_fds,
            log_preamble=f"envstore: starting PostgreSQL; {data_path_for_server} is {self.data_directory}",
        )

    async def _wait_until_accepting(self, child: LoggedChildProcess, port: int, data_path_for_server: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            probe = asyncio.create_task(self._served_data_directory(port))
            try:
                # Watch the child while the probe runs: a connection to a port
                # that something else holds can hang until the probe's
                # timeout, while our server has already died on the bind.
                while not probe.done():
                    if child.has_exited():
                        raise PostgresServerError(describe_failure("PostgreSQL exited during start-up", child))
                    await asyncio.wait({probe}, timeout=0.02)
            finally:
                probe.cancel()
            try:
                served_data_directory = probe.result()
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                # Refused while starting, or "the database system is starting
                # up" / "is in recovery mode" after a crash.
                last_error = error
                await asyncio.sleep(0.02)
                continue
            # Another PostgreSQL may hold the port while ours is about to fail
            # to bind it.
            if served_data_directory != data_path_for_server:
                raise PostgresServerError(
                    f"port {port} is served by another PostgreSQL (data directory {served_data_directory})"
                )
            return
        raise PostgresServerError(
            describe_failure(
                f"PostgreSQL did not accept connections within {self.startup_timeout}s "
                f"(last error: {last_error!r})",
                child,
            )
        )

    async def _served_data_directory(self, port: int) -> str:
        connection = await asyncpg.connect(
            host=self.host,
            port=port,
            user=SUPERUSER,
            password=self.passwords.password(SUPERUSER),
            database="postgres",
            timeout=2.0,
            ssl=self._client_tls(),
        )
        try:
            return await connection.fetchval("SHOW data_directory")
        finally:
            await connection.close()

    async def _create_database_if_missing(self) -> None:
        connection = await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self.passwords.password(SUPERUSER),
            database="postgres",
            timeout=5.0,
            ssl=self._client_tls(),
        )
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
            if not exists:
                quoted_name = '"' + self.database.replace('"', '""') + '"'
                try:
                    await connection.execute(f"CREATE DATABASE {quoted_name}")
                except asyncpg.DuplicateDatabaseError:
                    pass  # created concurrently by someone else
        finally:
            await connection.close()

    async def _set_up_roles(self) -> None:
        connection = await asyncpg.connect(self.superuser_dsn, timeout=5.0)
        try:
            await set_up_roles(connection, self.passwords, self.database)
        finally:
            await connection.close()
        if await asyncio.to_thread(self._require_passwords):
            await self._wait_until_passwords_are_required()

    def _require_passwords(self) -> bool:
        """Clusters made by earlier versions trusted every local connection: from now on each
        needs its role's password (the superuser's was set above, while trust still let us in).
        True if the rules changed and the server was told to reload them."""
        hba = self.data_directory / "pg_hba.conf"
        lines = hba.read_text().splitlines(keepends=True)
        changed = [
            re.sub(r"\btrust\s*$", "scram-sha-256\n", line) if not line.lstrip().startswith("#") else line
            for line in lines
        ]
        if changed == lines:
            return False
        hba.write_text("".join(changed))
        assert self._child is not None
        self._child.send_signal(signal.SIGHUP)
        return True

    async def _wait_until_passwords_are_required(self) -> None:
        """The reload is asynchronous: the stack must not start while trust still applies."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                connection = await asyncpg.connect(
                    host=self.host, port=self.port, user=SUPERUSER, database="postgres", timeout=2.0
                )
            except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
                return
            await connection.close()
            await asyncio.sleep(0.02)
        raise PostgresServerError(f"PostgreSQL still accepts connections without a password after {self.startup_timeout} s")

    async def _kill_process_tree(self, child: LoggedChildProcess) -> None:
        """SIGKILL the postmaster and its children at once, like a machine crash.

        The postmaster's children run in their own process groups, so a group
        kill would miss them. The postmaster is stopped first so it cannot
        fork while we list its children. Waiting for the children matters: a
        restart refuses to start while they still hold the old shared memory.
        """
        if child.has_exited():
            return
        child.send_signal(signal.SIGSTOP)
        backend_pids = child_pids(child.pid)
        child.send_signal(signal.SIGKILL)
        for backend_pid in backend_pids:
            try:
                os.kill(backend_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not await child.wait(self.stop_grace_seconds):
            raise PostgresServerError(f"postmaster {child.pid} survived SIGKILL")
        survivors = await wait_until_gone(backend_pids, self.stop_grace_seconds)
        if survivors:
            raise PostgresServerError(f"PostgreSQL processes {survivors} survived SIGKILL")

    async def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGKILL everything after ``stop_grace_seconds``."""
        child = self._child
        if child is None or child.has_exited():
            return
        backend_pids = child_pids(child.pid)
        child.send_signal(signal.SIGINT)
        if await child.wait(self.stop_grace_seconds):
            # The postmaster exits after its children; this only confirms it.
            await wait_until_gone(backend_pids, self.stop_grace_seconds)
            return
        await self._kill_process_tree(child)

    async def kill(self) -> None:
        """SIGKILL the server (postmaster and backends); the data directory is kept."""
        if self._child is not None:
            await self._kill_process_tree(self._child)

    async def restart(self) -> None:
        """Stop if still running, then start on the same port and data directory."""
        await self.stop()
        await self.start()
