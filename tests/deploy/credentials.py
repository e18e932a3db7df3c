"""Which credentials each envstore service is handed, in compose and in Kubernetes alike: every
one it would otherwise generate into its own data directory (per container, so replicas — and the
API and the registry, which check each other's tokens — would disagree), and no other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from envstore.common.bus_permissions import IDENTITIES
from envstore.launcher.nats_auth import authorization_config, public_key_of
from envstore.launcher.stack import BUS_IDENTITIES

S3 = {"s3_access_key", "s3_secret_key"}
CREDENTIALS = {
    "api": {
        "admin_token",
        "auth_secret",
        "auth_password",
        "storage_url_secret",
        "webhook_secret_key",
        "database_url",
        *S3,
    },
    "registry": {"admin_token", "auth_secret", "reader_database_url", *S3},
    "solver": S3,
    "builder": S3,
    "packager": S3,
    "api.webhooks": {"webhook_secret_key"},
}
# The file deploy/make-secrets.sh writes for each.
SECRET_FILES = {
    "admin_token": "admin-token",
    "auth_secret": "auth-secret",
    "auth_password": "auth-password",
    "storage_url_secret": "storage-url-secret",
    "webhook_secret_key": "webhook-secret-key",
    "database_url": "database-url",
    "reader_database_url": "reader-database-url",
    "s3_access_key": "s3-access-key",
    "s3_secret_key": "s3-secret-key",
}


def generated_values(secrets_directory: Path) -> dict[str, str]:
    """Each credential setting's value as make-secrets.sh generated it into ``secrets_directory``."""
    return {setting: (secrets_directory / name).read_text().strip() for setting, name in SECRET_FILES.items()}


def held_credentials(environment: dict[str, str]) -> set[str]:
    """The credential settings an environment hands over (as a value or a file)."""
    return {
        setting
        for setting in SECRET_FILES
        if f"ENVSTORE_{setting.upper()}" in environment or f"ENVSTORE_{setting.upper()}_FILE" in environment
    }


def run_make_secrets(script: Path, *arguments: str) -> None:
    """``bash deploy/make-secrets.sh``, with this environment's ``envstore`` command on PATH (it
    makes the NATS credentials), as after ``pip install .``."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run(["bash", str(script), *arguments], check=True, capture_output=True, env={**os.environ, "PATH": path})


def nats_seed(secrets_directory: Path, service: str) -> str:
    """The nkey seed make-secrets.sh generated for a service's identity on the bus."""
    return (secrets_directory / f"nats-{BUS_IDENTITIES[service]}.nk").read_text().strip()


def expected_nats_authorization(secrets_directory: Path, stream: str = "ENVSTORE") -> str:
    """The servers' authorization for the generated seeds: each identity's public key, with the
    permissions envstore derives for it."""
    seeds = {identity: (secrets_directory / f"nats-{identity}.nk").read_text().strip() for identity in IDENTITIES}
    return authorization_config({identity: public_key_of(seed) for identity, seed in seeds.items()}, stream)
