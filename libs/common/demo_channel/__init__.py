"""A real, offline conda channel of small demo packages, for tests and demos.

    url = await make_channel(tmp_path / "channel")   # "file:///.../channel"

See `catalogue` for the packages; the constants below name solves with known outcomes.
"""

from .catalogue import (
    BUILD_TIMESTAMP_SECONDS,
    CATALOGUE,
    CONSTRAINT_CONFLICT_SPEC,
    FIVE_PACKAGE_SOLUTION,
    FIVE_PACKAGE_SPEC,
    HELLO_PLATFORM_FILE,
    NOARCH_SUBDIR,
    OSX_MINIMUM_DEPENDENCY,
    PLATFORM_SUBDIRS,
    PREFIX_PLACEHOLDER,
    UNSATISFIABLE_SPEC,
    ArchiveFormat,
    FileMode,
    PackageDefinition,
    PackageFile,
)
from .channel import make_channel

__all__ = [
    "BUILD_TIMESTAMP_SECONDS",
    "CATALOGUE",
    "CONSTRAINT_CONFLICT_SPEC",
    "FIVE_PACKAGE_SOLUTION",
    "FIVE_PACKAGE_SPEC",
    "HELLO_PLATFORM_FILE",
    "NOARCH_SUBDIR",
    "OSX_MINIMUM_DEPENDENCY",
    "PLATFORM_SUBDIRS",
    "PREFIX_PLACEHOLDER",
    "UNSATISFIABLE_SPEC",
    "ArchiveFormat",
    "FileMode",
    "PackageDefinition",
    "PackageFile",
    "make_channel",
]
