"""NATS credentials: one nkey per identity (each service, the projection rebuild, the superuser),
generated once into a directory (mode 0600 files), and nats-server's ``authorization`` block
that admits exactly those keys with the permissions ``bus_permissions`` derives.

The embedded stack keeps them in ``<data dir>/nats-credentials/`` and hands each service the file
of its own seed (``ENVSTORE_NATS_CREDENTIALS_FILE``); ``envstore nats-credentials DIR`` writes
the same for compose and Kubernetes (``deploy/make-secrets.sh``). The server's configuration holds
public keys only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import nkeys

from envstore.common.bus_permissions import IDENTITIES, BusPermissions, permissions_of
from envstore.common.events import FILESYSTEM_NAMESPACE
from envstore.common.local_secrets import read_or_create_secret

SEED_SUFFIX = ".nk"
AUTHORIZATION_FILE = "nats-authorization.conf"


def new_user_seed() -> str:
    return nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), nkeys.PREFIX_BYTE_USER).decode()


def public_key_of(seed: str) -> str:
    return nkeys.from_seed(bytearray(seed.encode())).public_key.decode()


@dataclass(frozen=True)
class NatsCredentials:
    """The identities' seeds in ``directory``, created on first use."""

    directory: Path

    def seed_file(self, identity: str) -> Path:
        if identity not in IDENTITIES:
            raise ValueError(f"unknown NATS identity {identity!r}; identities: {', '.join(IDENTITIES)}")
        return self.directory / f"{identity}{SEED_SUFFIX}"

    def seed(self, identity: str) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        return read_or_create_secret(self.seed_file(identity), new_user_seed)

    def public_key(self, identity: str) -> str:
        return public_key_of(self.seed(identity))

    def authorization(self, stream: str, filesystem_namespace: str = FILESYSTEM_NAMESPACE) -> str:
        """nats-server's ``authorization`` block for every identity (seeds made if missing)."""
        public_keys = {identity: self.public_key(identity) for identity in IDENTITIES}
        return authorization_config(public_keys, stream, filesystem_namespace)


def _permissions_block(permissions: BusPermissions) -> str:
    parts = []
    if permissions.publish is not None:
        parts.append(f"publish: {{allow: {json.dumps(list(permissions.publish))}}}")
    if permissions.subscribe is not None:
        parts.append(f"subscribe: {{allow: {json.dumps(list(permissions.subscribe))}}}")
    if permissions.allow_responses:
        parts.append("allow_responses: true")
    return "{" + ", ".join(parts) + "}"


def authorization_config(
    public_keys: dict[str, str], stream: str, filesystem_namespace: str = FILESYSTEM_NAMESPACE
) -> str:
    """Admit each identity's public key with its permissions; anyone else is refused."""
    users = []
    for identity, public_key in public_keys.items():
        permissions = permissions_of(identity, stream, filesystem_namespace)
        entry = f"    # {identity}\n    {{nkey: {json.dumps(public_key)}"
        if permissions.publish is not None or permissions.subscribe is not None:
            entry += f", permissions: {_permissions_block(permissions)}"
        users.append(entry + "}")
    return (
        "# Made by envstore (envstore.launcher.nats_auth) from its event catalogue: regenerate, do not edit.\n"
        "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"
    )


def write_deployment_credentials(
    directory: Path, stream: str = "ENVSTORE", filesystem_namespace: str = FILESYSTEM_NAMESPACE
) -> list[Path]:
    """For compose and Kubernetes: ``nats-<identity>.nk`` per identity (kept if present) and the
    servers' ``nats-authorization.conf`` (written anew). Returns the files written."""
    written = []
    public_keys = {}
    for identity in IDENTITIES:
        target = directory / f"nats-{identity}{SEED_SUFFIX}"
        seed = read_or_create_secret(target, new_user_seed)
        public_keys[identity] = public_key_of(seed)
        written.append(target)
    authorization = directory / AUTHORIZATION_FILE
    authorization.write_text(authorization_config(public_keys, stream, filesystem_namespace))
    written.append(authorization)
    return written
