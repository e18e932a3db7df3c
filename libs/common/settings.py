"""One typed settings model for every envstore process.

Keys follow conda-store's settings names (so its settings API can expose them unchanged); each is
read from ``ENVSTORE_<KEY>``. List settings accept a comma-separated string
(``ENVSTORE_CONDA_ALLOWED_CHANNELS=conda-forge,bioconda``) or a JSON list. Any key can also be read
from a file named by ``ENVSTORE_<KEY>_FILE`` (how compose and Kubernetes hand over secrets).
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from envstore.common.artifact_kinds import ArtifactKind

GIBIBYTE = 1024**3


def host_platform() -> str:
    """The conda subdir of the machine this process runs on (``linux-64``, ``osx-arm64`` …)."""
    machine = platform.machine().lower()
    system = {"linux": "linux", "darwin": "osx", "win32": "win"}.get(sys.platform, sys.platform)
    architecture = {
        "x86_64": "64",
        "amd64": "64",
        "aarch64": "aarch64" if system == "linux" else "arm64",
        "arm64": "aarch64" if system == "linux" else "arm64",
        "ppc64le": "ppc64le",
    }.get(machine, machine)
    return f"{system}-{architecture}"


CommaList = Annotated[list[str], NoDecode]
RATTLER = "rattler"


def default_conda_platforms() -> list[str]:
    return ["noarch", host_platform()]


def normalized_url_prefix(prefix: str) -> str:
    """``""`` for the root, else ``"/"`` and the prefix without surrounding slashes
    (``conda-store/`` and ``/conda-store`` are both ``/conda-store``)."""
    stripped = prefix.strip().strip("/")
    return "/" + stripped if stripped else ""


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class SecretFilesSource(PydanticBaseSettingsSource):
    """``ENVSTORE_<KEY>_FILE=/run/secrets/x``: the setting's value is that file's content (stripped),
    so secrets need not sit in the environment. A value given directly takes precedence."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"ENVSTORE_{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().strip(), field_name, False
        except OSError as error:
            raise ValueError(
                f"ENVSTORE_{field_name.upper()}_FILE names {path}, which cannot be read ({error.strerror})"
            ) from None

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[field_name] = value
        return values


# conda-store's allow-list before it became "anything" (conda-store 0.4.x): a submitter cannot
# point the solver at any URL they like unless the deployment or a namespace admin widens it.
DEFAULT_ALLOWED_CHANNELS = ("main", "conda-forge", "https://repo.anaconda.com/pkgs/main")


class EnvstoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENVSTORE_", extra="ignore")

    # --- conda-store's settings keys (global-only ones marked in GLOBAL_ONLY_SETTINGS) ---
    default_namespace: str = "default"
    filesystem_namespace: str = "filesystem"
    default_uid: int | None = Field(default=None, ge=0)
    default_gid: int | None = Field(default=None, ge=0)
    default_permissions: str | None = "775"
    storage_threshold: int = 5 * GIBIBYTE
    conda_command: str = "rattler"
    conda_platforms: CommaList = Field(default_factory=lambda: default_conda_platforms())
    conda_max_solve_time: int = 300
    conda_indexed_channels: CommaList = Field(default_factory=lambda: ["conda-forge"])
    build_artifacts_kept_on_deletion: CommaList = Field(
        default_factory=lambda: [ArtifactKind.LOGS, ArtifactKind.LOCKFILE, ArtifactKind.YAML]
    )
    conda_solve_platforms: CommaList = Field(default_factory=lambda: [host_platform()])
    conda_channel_alias: str = "https://conda.anaconda.org"
    conda_default_channels: CommaList = Field(default_factory=lambda: ["conda-forge"])
    conda_allowed_channels: CommaList = Field(default_factory=lambda: list(DEFAULT_ALLOWED_CHANNELS))
    conda_default_packages: CommaList = Field(default_factory=list)
    conda_required_packages: CommaList = Field(default_factory=list)
    conda_included_packages: CommaList = Field(default_factory=list)
    pypi_default_packages: CommaList = Field(default_factory=list)
    pypi_required_packages: CommaList = Field(default_factory=list)
    pypi_included_packages: CommaList = Field(default_factory=list)
    build_artifacts: CommaList = Field(
        default_factory=lambda: [
            ArtifactKind.LOCKFILE,
            ArtifactKind.YAML,
            ArtifactKind.CONDA_PACK,
            ArtifactKind.CONSTRUCTOR_INSTALLER,
            ArtifactKind.DOCKER_MANIFEST,
        ]
    )
    build_key_version: int = 2

    # --- conda-store's admin hooks: dotted paths of Python callables (package.module.function) ---
    # Called as validate_specification(namespace=..., specification={...}) on every submitted
    # specification after the package and channel settings; returns the specification to build
    # (None: unchanged) or raises ValueError, whose message the submitter gets as the 400.
    validate_specification: str | None = None
    # Called as post_update_environment_build_hook(namespace=..., environment=..., build_id=...,
    # build_key=..., prefix=..., environment_path=...) by the builder after an environment's
    # current build changed (a build completed, a rollback) and its envs/<name> link points at it.
    post_update_environment_build_hook: str | None = None
    # true: builds are installed one at a time across every builder replica.
    serialize_builds: bool = False
    # --- conda-store's watch_paths: directories (or files) whose *.yaml / *.yml environments
    # are kept built in filesystem_namespace by the watcher process ---
    watch_paths: CommaList = Field(default_factory=list)
    # true: removing a file deletes the environment it defined (conda-store keeps it).
    watch_paths_delete_removed: bool = False

    # --- envstore's own settings ---
    data_dir: Path = Path("./envstore-data")
    store_directory: Path | None = None  # environments' prefixes; default <data_dir>/envs
    storage_directory: Path | None = None  # local artifact storage; default <data_dir>/storage
    cache_directory: Path | None = None  # package + repodata caches; default <data_dir>/cache
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "ENVSTORE"
    nats_stream_replicas: int = 1
    nats_duplicate_window_seconds: float = 600.0
    # This process's NATS identity: the nkey seed (SU…) `envstore up` or deploy/make-secrets.sh
    # generated for it, usually handed over as a file (ENVSTORE_NATS_CREDENTIALS_FILE).
    nats_credentials: SecretStr | None = None
    # The CA certificate (PEM) NATS servers' certificates are verified with; set: TLS to NATS.
    # Usually a file: ENVSTORE_NATS_TLS_CA_FILE.
    nats_tls_ca: str | None = None
    database_url: str = "postgresql://postgres@127.0.0.1:5432/envstore"  # the API's: writes the read model
    # A role that may only SELECT the read model, for services that only read it; unset: database_url.
    reader_database_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # The API's URL as clients reach it (e.g. https://example.org/conda-store), when a proxy that
    # sends no X-Forwarded-* headers stands in front; it then wins over what requests say.
    api_external_url: str | None = None
    url_prefix: str = "/"  # every API, UI, storage and login route is served under it
    # Proxies (addresses or networks, e.g. 10.0.0.0/8) whose X-Forwarded-Proto/-Host/-For headers
    # are believed; from anyone else those headers are ignored.
    trusted_proxies: CommaList = Field(default_factory=list)
    registry_host: str = "127.0.0.1"
    registry_port: int = 5000
    # Bind the API's and the registry's ports with SO_REUSEPORT, so that several replicas on one
    # host share each port (the kernel spreads connections among them); `envstore up --replicas N`
    # sets it. Off by default: a second process on a taken port then fails loudly.
    listen_reuse_port: bool = False
    registry_external_url: str | None = None  # host[:port] users pull from; default host:port
    registry_image_wait_seconds: float = 600.0  # a pull waits this long for a running build
    # --- OCI images (DOCKER_MANIFEST) ---
    image_prefix: str = "/opt/conda"
    image_base: str = ""  # scratch; or oci:<dir>[:<tag>], a layout directory, or docker://<ref>
    image_layer_budget: int = 100  # base image layers included
    image_build_id_label: bool = False  # a build-id label makes every rebuild a new digest
    admin_token: str | None = None
    # --- authentication (conda-store's AuthenticationBackend / RBACAuthorizationBackend) ---
    auth_secret: str | None = None  # HS256 key; unset: generated once into <data_dir>/auth-secret
    # The password backend's one password; unset (or empty): generated once into
    # <data_dir>/auth-password. Every user name logs in with it.
    auth_password: SecretStr | None = None
    # User names whose login is */* admin; everyone else gets <user>/* admin and the
    # authenticated role bindings.
    auth_admin_users: CommaList = Field(default_factory=list)
    # Failed logins tolerated per user name and per client address within the window; more
    # answer 429 until the oldest failure leaves the window.
    auth_login_failures_per_user: int = Field(default=5, ge=1)
    auth_login_failures_per_address: int = Field(default=20, ge=1)
    auth_login_window_seconds: float = Field(default=60.0, gt=0)
    auth_token_lifetime_seconds: int = 24 * 3600
    predefined_tokens: dict[str, dict] = Field(default_factory=dict)
    role_mappings_version: int = 1
    unauthenticated_role_bindings: dict[str, list[str]] = Field(
        default_factory=lambda: {"default/*": ["viewer"]}
    )
    authenticated_role_bindings: dict[str, list[str]] = Field(
        default_factory=lambda: {"default/*": ["viewer"], "filesystem/*": ["viewer"]}
    )
    auth_cookie_domain: str | None = None
    max_request_bytes: int = 16 * 1024 * 1024
    # --- channels: which hosts the solver may fetch from ---
    # Host names ("mirror.internal", "*.corp.example"), addresses or networks that channels may
    # point at although they are loopback, private or link-local (refused otherwise). Channels
    # named in this deployment's own CONDA_ALLOWED_CHANNELS / CONDA_DEFAULT_CHANNELS (not the
    # settings API's overrides) are trusted wherever they point, file:// ones included.
    channel_allowed_hosts: CommaList = Field(default_factory=list)
    # The packager packs the builder's prefix when it is on the same host (one node); false: it
    # always installs its own copy from the lock and its package cache (as on another host).
    packager_reuse_builder_prefix: bool = True
    worker_concurrency: int = 2
    worker_ack_wait_seconds: float = 30.0
    worker_max_attempts: int = 3
    worker_phase_timeout_seconds: float = 3600.0
    projection_wait_seconds: float = 5.0
    # Who reads the log for the projector: a child process of the API (nats-py's parsing then
    # runs on another core than the one applying events), or the API's own process.
    projection_reader: Literal["child-process", "in-process"] = "child-process"
    # The API keeps encoded answers of read routes until the read model changes them; 0: none.
    api_answer_cache_bytes: int = 64 * 1024 * 1024
    solve_cache_entries: int = 512

    # Retention (stored per namespace or environment through the settings API): archive completed
    # builds beyond the last N of an environment and those unused for D days (a build either rule
    # keeps is kept; the current build always is). Unset: no retention.
    retention_keep_builds: int | None = Field(default=None, ge=1)
    retention_unused_days: float | None = Field(default=None, gt=0)
    # A request for an archived artifact waits at most this long (?wait=) for its rehydration.
    rehydration_wait_seconds: float = Field(default=600.0, gt=0)
    # Garbage collection leaves alone every blob and package-cache entry written or reused within
    # this many seconds: it must exceed the longest build (a running build's blobs are referenced
    # by the read model only once its events land).
    gc_grace_seconds: float = Field(default=86400.0, ge=0)
    # Use (pulls, downloads, activations) is counted in memory and published as one build.used
    # event per build per this many seconds.
    usage_flush_seconds: float = Field(default=60.0, gt=0)

    # --- live event stream (GET /api/v1/events/) ---
    events_keepalive_seconds: float = Field(default=15.0, gt=0)

    # --- webhooks ---
    # Host names ("hooks.internal", "*.corp.example"), addresses or networks ("10.1.0.0/16") that
    # webhooks may target although they are loopback, private or link-local (refused otherwise).
    webhook_allowed_hosts: CommaList = Field(default_factory=list)
    webhook_only_allowed_hosts: bool = False  # True: only the hosts of webhook_allowed_hosts
    # Encrypts webhook secrets inside the event stream; unset: generated once into
    # <data_dir>/webhook-secret-key, shared by the API and the delivering process.
    webhook_secret_key: SecretStr | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_base_seconds: float = Field(default=2.0, gt=0)  # doubles after each failure
    webhook_retry_max_seconds: float = Field(default=600.0, gt=0)
    webhook_ack_wait_seconds: float = Field(default=30.0, gt=0)  # a dead deliverer's POST is retried after this
    webhook_max_in_flight: int = Field(default=16, ge=1)  # concurrent POSTs per webhook

    # --- conda-store's web UI ---
    ui_directory: Path | None = None  # the UI's built files; default: the API's static folder
    ui_auth_method: Literal["cookie", "token"] = "cookie"
    # Token mode puts this token into every page served: only where everyone who can open the
    # UI may act with it (a single-user or kiosk set-up).
    ui_auth_token: SecretStr | None = None
    ui_style: Literal["green-accent", "grayscale"] = "green-accent"

    # --- artifact storage back end: a local directory (storage_directory) or S3 ---
    storage_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None  # unset: AWS's endpoint for s3_region
    s3_bucket: str = "envstore"  # created on first use if missing
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None  # unset (both): boto's credential chain (env, profile, IAM role)
    s3_secret_key: SecretStr | None = None
    s3_path_style: bool = False  # true for most non-AWS servers (SeaweedFS, MinIO)
    s3_presign_seconds: int = Field(default=3600, gt=0, le=7 * 24 * 3600)  # SigV4 allows at most 7 days
    # Local storage's artifact links (/storage/<key>?expires=&signature=) stay valid this long.
    storage_url_seconds: int = Field(default=600, gt=0)
    # Signs those links; unset: generated once into <data_dir>/storage-url-secret.
    storage_url_secret: SecretStr | None = None
    # --- end of artifact storage back end ---

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFilesSource(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("*", mode="before")
    @classmethod
    def _split_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """Every list setting accepts a comma-separated string (or JSON) from the environment."""
        if get_origin(cls.model_fields[info.field_name].annotation) is list:
            return _split_list(value)
        return value

    @field_validator("nats_credentials")
    @classmethod
    def _nkey_seed(cls, seed: SecretStr | None) -> SecretStr | None:
        if seed is not None and not seed.get_secret_value().startswith("SU"):
            raise ValueError(
                "NATS credentials must be a user nkey seed (a line starting with SU), as envstore up and "
                "deploy/make-secrets.sh write them"
            )
        return seed

    @field_validator("url_prefix")
    @classmethod
    def _normalized_url_prefix(cls, prefix: str) -> str:
        return "/" + normalized_url_prefix(prefix).lstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {proxy!r} is not an IP address or network (like 10.0.0.5 or 10.0.0.0/8)"
                ) from None
        return proxies

    @field_validator("conda_command")
    @classmethod
    def _rattler_only(cls, command: str) -> str:
        if command != RATTLER:
            raise ValueError(
                f"conda_command {command!r} is not available: envstore solves and installs with rattler "
                f"(py-rattler) only; remove the setting or set it to {RATTLER!r}"
            )
        return command

    @field_validator("conda_platforms")
    @classmethod
    def _platforms_are_fetched_per_solve(cls, platforms: list[str]) -> list[str]:
        fixed = default_conda_platforms()
        if sorted(platforms) != sorted(fixed):
            raise ValueError(
                "conda_platforms cannot be changed in envstore: it fetches the package index of each of "
                "conda_solve_platforms, and noarch, as it solves (it keeps no index of whole channels); "
                f"set conda_solve_platforms instead (conda_platforms stays {fixed})"
            )
        return platforms

    @field_validator("default_permissions")
    @classmethod
    def _octal_permissions(cls, permissions: str | None) -> str | None:
        if permissions is not None and re.fullmatch("[0-7]{3}", permissions) is None:
            raise ValueError(
                f"default_permissions {permissions!r} must be three octal digits as chmod takes them, like 775"
            )
        return permissions

    @field_validator("build_artifacts", "build_artifacts_kept_on_deletion")
    @classmethod
    def _known_artifact_kinds(cls, kinds: list[str]) -> list[str]:
        known = {kind.value for kind in ArtifactKind}
        unknown = [kind for kind in kinds if kind not in known]
        if unknown:
            raise ValueError(f"unknown artifact kinds {unknown}; known: {sorted(known)}")
        return [str(ArtifactKind(kind).value) for kind in kinds]

    @property
    def environments_root(self) -> Path:
        return (self.store_directory or self.data_dir / "envs").resolve()

    @property
    def storage_root(self) -> Path:
        return (self.storage_directory or self.data_dir / "storage").resolve()

    @property
    def cache_root(self) -> Path:
        return (self.cache_directory or self.data_dir / "cache").resolve()

    @property
    def package_cache(self) -> Path:
        return self.cache_root / "pkgs"

    @property
    def read_only_database_url(self) -> str:
        return self.reader_database_url or self.database_url

    @property
    def path_prefix(self) -> str:
        """The URL prefix as route paths start with it: ``""`` or ``"/conda-store"``."""
        return normalized_url_prefix(self.url_prefix)

    @property
    def api_url(self) -> str:
        if self.api_external_url:
            return self.api_external_url.rstrip("/")
        return f"http://{self.api_host}:{self.api_port}{self.path_prefix}"


# The keys conda-store's settings API reads and writes (GET/PUT /api/v1/setting/…).
CONDA_STORE_SETTINGS = (
    "default_namespace",
    "filesystem_namespace",
    "default_uid",
    "default_gid",
    "default_permissions",
    "storage_threshold",
    "conda_command",
    "conda_platforms",
    "conda_max_solve_time",
    "conda_indexed_channels",
    "build_artifacts_kept_on_deletion",
    "conda_solve_platforms",
    "conda_channel_alias",
    "conda_default_channels",
    "conda_allowed_channels",
    "conda_default_packages",
    "conda_required_packages",
    "conda_included_packages",
    "pypi_default_packages",
    "pypi_required_packages",
    "pypi_included_packages",
    "build_artifacts",
    # envstore's own, stored like conda-store's
    "retention_keep_builds",
    "retention_unused_days",
)

# Shown by the settings API but not changed through it: they name the deployment's shared
# namespaces, which every service reads once at start (set ENVSTORE_<KEY> and restart).
DEPLOYMENT_ONLY_SETTINGS = frozenset({"default_namespace", "filesystem_namespace"})

GLOBAL_ONLY_SETTINGS = frozenset(
    {
        "default_namespace",
        "filesystem_namespace",
        "default_uid",
        "default_gid",
        "default_permissions",
        "storage_threshold",
        "conda_command",
        "conda_platforms",
        "conda_max_solve_time",
        "conda_indexed_channels",
        "build_artifacts_kept_on_deletion",
    }
)
