"""A real reverse proxy in front of a stack: Debian's nginx, terminating TLS on loopback with a
self-signed certificate made here (``cryptography``), passing the API under its URL prefix and the
registry at ``/v2/``, and telling envstore what the client used (``X-Forwarded-Proto``, ``-Host``,
``-For``) while the ``Host`` it sends is envstore's own inside address: so every absolute URL that
envstore gets right here comes from the forwarded headers."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import signal
import shutil
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from envstore.launcher.child_process import LoggedChildProcess, describe_failure
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack

PROXY_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 15.0


def write_self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and 127.0.0.1 that is its own authority (so a client can
    trust exactly it with ``SSL_CERT_FILE``); returns (certificate, key) file paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(PROXY_HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certificate_file, key_file = directory / "proxy.crt", directory / "proxy.key"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return certificate_file, key_file


def nginx_configuration(
    directory: Path, port: int, certificate: Path, key: Path, url_prefix: str, api: str, registry: str
) -> str:
    temporary = {name: directory / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    # As root, nginx's workers would switch to an account that cannot read pytest's directories.
    user = "user root root;" if os.geteuid() == 0 else ""
    api_locations = f"location {url_prefix}/ {{ proxy_pass http://{api}; }}"
    if url_prefix:
        api_locations += f"\n        location = {url_prefix} {{ proxy_pass http://{api}; }}"
    return f"""
{user}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temporary["client_body"]};
    proxy_temp_path {temporary["proxy"]};
    fastcgi_temp_path {temporary["fastcgi"]};
    uwsgi_temp_path {temporary["uwsgi"]};
    scgi_temp_path {temporary["scgi"]};
    client_max_body_size 64m;
    server {{
        listen {PROXY_HOST}:{port} ssl;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # Live logs and server-sent events must reach the client as they are written.
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 1h;
        # Host stays envstore's inside address (nginx's default); what the client used travels here.
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        {api_locations}
        location /v2/ {{ proxy_pass http://{registry}; }}
    }}
}}
"""


class NginxProxy:
    def __init__(self, directory: Path, url_prefix: str, api: str, registry: str) -> None:
        self.directory = directory
        self.url_prefix = url_prefix
        self.api = api  # host:port of the API's listener
        self.registry = registry
        self.port = pick_free_port(PROXY_HOST)
        self.certificate: Path = directory / "proxy.crt"
        self.process: LoggedChildProcess | None = None

    @property
    def url(self) -> str:
        return f"https://{PROXY_HOST}:{self.port}"

    async def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(nginx).exists(), "nginx is missing: apt-get install nginx (scripts/setup.sh does)"
        self.certificate, key = write_self_signed_certificate(self.directory)
        configuration = self.directory / "nginx.conf"
        configuration.write_text(
            nginx_configuration(self.directory, self.port, self.certificate, key, self.url_prefix, self.api, self.registry)
        )
        self.process = LoggedChildProcess.spawn(
            [nginx, "-p", str(self.directory), "-c", str(configuration), "-e", str(self.directory / "error.log"),
             "-g", "daemon off;"],
            self.directory / "nginx.log",
            env=dict(os.environ),
        )
        await self._wait_until_listening()

    async def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert self.process is not None
            if self.process.has_exited():
                raise RuntimeError(describe_failure("nginx", self.process))
            try:
                _, writer = await asyncio.open_connection(PROXY_HOST, self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen on {self.url} within {START_TIMEOUT_SECONDS} s") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop(signal.SIGTERM, grace_seconds=5)


class ProxiedStack(EmbeddedStack):
    """An embedded stack that users reach only through nginx: ``api_url`` and
    ``public_registry_url`` are the proxy's HTTPS addresses."""

    def __init__(self, data_directory: Path, settings: dict[str, str] | None = None) -> None:
        super().__init__(data_directory, settings=settings)
        self.proxy = NginxProxy(
            self.data_directory / "nginx", self.url_prefix, f"{self.host}:{self.api_port}", f"{self.host}:{self.registry_port}"
        )

    @property
    def api_url(self) -> str:
        return f"{self.proxy.url}{self.url_prefix}"

    @property
    def public_registry_url(self) -> str:
        return self.proxy.url

    async def start(self) -> None:
        await super().start()
        await self.proxy.start()

    async def stop(self) -> None:
        await self.proxy.stop()
        await super().stop()
