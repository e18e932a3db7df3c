"""What every artifact producer gets (the build's lock, prefix and submission) and returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from envstore.common.events import BlobRef, BuildBuilt, BuildRef, BuildSubmitted
from envstore.common.lock import Lock
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.common.storage import Storage


@dataclass(frozen=True)
class Produced:
    """An artifact in storage: its conda-store style name, its blob, its media type."""

    key: str
    blob: BlobRef
    content_type: str


@dataclass(frozen=True)
class BuildInputs:
    built: BuildBuilt
    submitted: BuildSubmitted
    lock: Lock
    storage: Storage
    settings: EnvstoreSettings
    work_directory: Path  # scratch space for this build's artifacts, removed afterwards
    # The installed environment packed into artifacts: the builder's prefix when it is on this
    # host, else the packager's own install of the lock (``prepared_prefix``).
    installed_prefix: Path | None = None
    # Set for a further platform's artifacts (a multi-platform lock): the platform they are for.
    target_platform: str | None = None

    @property
    def further_platform(self) -> str | None:
        """The platform of a further platform's artifacts (None: the build's main artifacts)."""
        return self.target_platform

    @property
    def build(self) -> BuildRef:
        return self.built.build

    @property
    def prefix(self) -> Path:
        return self.installed_prefix or Path(self.built.prefix)

    @property
    def platform(self) -> str:
        """The platform whose packages make the single-platform artifacts: the target platform's,
        else the build's main one (the host's if locked)."""
        if self.target_platform is not None:
            return self.target_platform
        host = host_platform()
        return host if host in self.lock.platforms else sorted(self.lock.platforms)[0]
