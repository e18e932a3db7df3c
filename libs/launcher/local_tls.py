"""A local certificate authority for ``envstore up --tls``: a CA and one certificate per server
(NATS, PostgreSQL), made with ``cryptography`` into a directory of the data directory and kept
there (keys mode 0600). The services are given the CA's certificate and verify every server
against it; NATS' cluster routes use the same certificate both ways (server and client).

A certificate whose names no longer cover the host it is asked for, or that is near its end, is
made again at start; deleting the directory makes a new CA (every client gets it at start).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca"
CA_LIFETIME = datetime.timedelta(days=3650)
CERTIFICATE_LIFETIME = datetime.timedelta(days=825)
# Made again at start when fewer days than this are left.
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertificateFiles:
    """A server's certificate and key, and the CA that signed it (PEM files)."""

    certificate: Path
    key: Path
    authority: Path


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as written:
        written.write(data)
    os.chmod(path, 0o600)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LocalCertificateAuthority:
    """The CA in ``directory`` (made on first use) and the servers' certificates it signs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def certificate_file(self) -> Path:
        return self.directory / f"{CA_NAME}.crt"

    @property
    def key_file(self) -> Path:
        return self.directory / f"{CA_NAME}.key"

    def _authority(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if self.certificate_file.exists() and self.key_file.exists():
            certificate = x509.load_pem_x509_certificate(self.certificate_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            if certificate.not_valid_after_utc - _now() > RENEW_BEFORE:
                return certificate, key
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envstore local CA")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.key_file, _key_bytes(key))
        self.certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return certificate, key

    def server_certificate(self, name: str, hosts: list[str]) -> CertificateFiles:
        """``<name>.crt`` and ``<name>.key`` for a server reached as any of ``hosts`` (names or
        addresses), usable as a client certificate too (NATS routes); kept while still good."""
        authority, authority_key = self._authority()
        files = CertificateFiles(self.directory / f"{name}.crt", self.directory / f"{name}.key", self.certificate_file)
        if files.certificate.exists() and files.key.exists() and self._still_good(files.certificate, authority, hosts):
            return files
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"envstore {name}")]))
            .issuer_name(authority.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + CERTIFICATE_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), critical=False
            )
            .sign(authority_key, hashes.SHA256())
        )
        _write_private(files.key, _key_bytes(key))
        files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return files

    @staticmethod
    def _still_good(path: Path, authority: x509.Certificate, hosts: list[str]) -> bool:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        if certificate.issuer != authority.subject or certificate.not_valid_after_utc - _now() < RENEW_BEFORE:
            return False
        try:
            certificate.verify_directly_issued_by(authority)
        except (InvalidSignature, ValueError, TypeError):  # signed by an earlier CA
            return False
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return all(name in names for name in _subject_names(hosts))
