"""The demo channel's packages, described as plain immutable data.

Every arch-specific package exists for each of `PLATFORM_SUBDIRS`; noarch packages live in `noarch`.
The files are tiny so that building and installing the whole channel takes well under a second.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

PLATFORM_SUBDIRS = ("linux-64", "linux-aarch64", "osx-arm64")
NOARCH_SUBDIR = "noarch"

# conda-build style: a 255-character host prefix, long enough that any real install prefix fits in
# its place inside binary files (binary relocation pads the new prefix with NULs).
_PLACEHOLDER_HEAD = "/opt/envstore-demo-build/host/_h_env"
PREFIX_PLACEHOLDER = (_PLACEHOLDER_HEAD + "_placehold" * 26)[:255]

# Fixed build time so the archives and the repodata are byte-for-byte reproducible.
BUILD_TIMESTAMP_SECONDS = 1_700_000_000

# macOS builds of compiled libraries require a minimum macOS, as on conda-forge.
OSX_MINIMUM_DEPENDENCY = "__osx >=11.0"


class ArchiveFormat(enum.StrEnum):
    CONDA = ".conda"
    TAR_BZ2 = ".tar.bz2"


CONDA_ONLY = (ArchiveFormat.CONDA,)
TAR_BZ2_ONLY = (ArchiveFormat.TAR_BZ2,)
BOTH_FORMATS = (ArchiveFormat.CONDA, ArchiveFormat.TAR_BZ2)


class FileMode(enum.StrEnum):
    TEXT = "text"
    BINARY = "binary"


@dataclass(frozen=True)
class PackageFile:
    path: str
    content: bytes
    executable: bool = False
    # Set when `content` embeds PREFIX_PLACEHOLDER, which the installer replaces by the real prefix.
    placeholder_mode: FileMode | None = None


@dataclass(frozen=True)
class PackageDefinition:
    name: str
    version: str
    subdir: str
    files: tuple[PackageFile, ...]
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    build_number: int = 0
    formats: tuple[ArchiveFormat, ...] = CONDA_ONLY
    license: str = "BSD-3-Clause"
    summary: str = ""

    @property
    def noarch(self) -> str | None:
        return "generic" if self.subdir == NOARCH_SUBDIR else None

    @property
    def build(self) -> str:
        """A conda-build style build string: `h<hash of the variant>_<build number>`."""
        variant = "\n".join((self.name, self.version, self.subdir, *self.depends, *self.constrains))
        digest = hashlib.sha256(variant.encode()).hexdigest()[:7]
        return f"h{digest}_{self.build_number}"

    def filename(self, archive_format: ArchiveFormat) -> str:
        return f"{self.name}-{self.version}-{self.build}{archive_format}"


# (name, version, subdir) → files
FileFactory = Callable[[str, str, str], tuple[PackageFile, ...]]


def readme_files(name: str, version: str, subdir: str = NOARCH_SUBDIR) -> tuple[PackageFile, ...]:
    return (
        PackageFile(f"share/{name}/README.txt", f"{name} {version}\n".encode()),
        PackageFile(f"share/{name}/version.txt", f"{version}\n".encode()),
    )


def command_files(name: str, version: str, subdir: str = NOARCH_SUBDIR) -> tuple[PackageFile, ...]:
    script = f'#!/bin/sh\necho "{name} {version}"\n'
    return (PackageFile(f"bin/{name}", script.encode(), executable=True), *readme_files(name, version))


def shared_library_files(name: str, version: str, subdir: str = NOARCH_SUBDIR) -> tuple[PackageFile, ...]:
    library_name = name if name.startswith("lib") else f"lib{name}"
    # Looks enough like an ELF file for tools that sniff it; the placeholder is a NUL-terminated string.
    content = (
        b"\x7fELF\x02\x01\x01\x00" + bytes(8)
        + f"{library_name} {version}".encode() + b"\x00"
        + PREFIX_PLACEHOLDER.encode() + b"/lib\x00"
        + bytes(range(256))
    )
    return (
        PackageFile(f"lib/{library_name}.so", content, placeholder_mode=FileMode.BINARY),
        *readme_files(name, version),
    )


def greeting_data_files(name: str, version: str, subdir: str = NOARCH_SUBDIR) -> tuple[PackageFile, ...]:
    return (PackageFile(f"share/{name}/version.txt", f"{version}\n".encode()),)


HELLO_BINARY_PREFIX_FILE = "share/hello/prefix.bin"
HELLO_PLATFORM_FILE = "share/hello/platform.txt"


def hello_files(name: str, version: str, subdir: str = NOARCH_SUBDIR) -> tuple[PackageFile, ...]:
    hello_script = (
        "#!/bin/sh\n"
        f"prefix='{PREFIX_PLACEHOLDER}'\n"
        'greeting=$(cat "$prefix/share/greeting-data/version.txt")\n'
        f"printf 'hello %s prefix=%s greeting-data=%s\\n' '{version}' \"$prefix\" \"$greeting\"\n"
    )
    # After binary relocation the file starts with the prefix, NUL-padded to the placeholder's length;
    # the script finds the file next to itself so that it checks the binary relocation only.
    binary_prefix_script = (
        "#!/bin/sh\n"
        f'data="$(dirname -- "$0")/../{HELLO_BINARY_PREFIX_FILE}"\n'
        f'dd if="$data" bs={len(PREFIX_PLACEHOLDER)} count=1 2>/dev/null | tr -d \'\\000\'\n'
        "echo\n"
    )
    binary_prefix_data = PREFIX_PLACEHOLDER.encode() + bytes(16) + b"\xff\xfe\x01\x02\x80envstore\x00\x9f"
    return (
        PackageFile("bin/hello", hello_script.encode(), executable=True, placeholder_mode=FileMode.TEXT),
        PackageFile("bin/hello-binary-prefix", binary_prefix_script.encode(), executable=True),
        PackageFile(HELLO_BINARY_PREFIX_FILE, binary_prefix_data, placeholder_mode=FileMode.BINARY),
        # Which platform's build this is: what a test of a multi-platform artifact looks for.
        PackageFile(HELLO_PLATFORM_FILE, f"{subdir}\n".encode()),
    )


@dataclass(frozen=True)
class Release:
    version: str
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackageFamily:
    """All releases of one package name, expanded into one PackageDefinition per release and subdir."""

    name: str
    summary: str
    releases: tuple[Release, ...]
    files: FileFactory = readme_files
    noarch: bool = False
    formats: tuple[ArchiveFormat, ...] = CONDA_ONLY
    needs_minimum_osx: bool = False

    def definitions(self) -> tuple[PackageDefinition, ...]:
        subdirs = (NOARCH_SUBDIR,) if self.noarch else PLATFORM_SUBDIRS
        return tuple(
            PackageDefinition(
                name=self.name,
                version=release.version,
                subdir=subdir,
                files=self.files(self.name, release.version, subdir),
                depends=release.depends + self._platform_depends(subdir),
                constrains=release.constrains,
                formats=self.formats,
                summary=self.summary,
            )
            for release in self.releases
            for subdir in subdirs
        )

    def _platform_depends(self, subdir: str) -> tuple[str, ...]:
        if self.needs_minimum_osx and subdir.startswith("osx-"):
            return (OSX_MINIMUM_DEPENDENCY,)
        return ()


FAMILIES = (
    # Solvable only where a GPU's driver is declared: a specification's `virtual_packages: [__cuda=12.4]`.
    PackageFamily(
        "gpukit", "Needs a CUDA driver", files=command_files, releases=(Release("1.0", depends=("__cuda >=12",)),),
    ),
    PackageFamily(
        "greeting-data", "Greeting data files", noarch=True, files=greeting_data_files,
        releases=(Release("1.0"), Release("1.1"), Release("2.0")),
    ),
    PackageFamily(
        "libhello", "The hello library", files=shared_library_files, needs_minimum_osx=True,
        releases=(Release("1.0"), Release("2.0"), Release("2.1")),
    ),
    PackageFamily(
        "hello", "Prints a greeting and its install prefix", files=hello_files,
        releases=(
            Release("1.0", depends=("greeting-data 1.*", "libhello 1.0.*")),
            Release("2.0", depends=("greeting-data >=1.1", "libhello 2.0.*"), constrains=("oldtool <2",)),
            Release("2.1", depends=("greeting-data >=1.1", "libhello 2.1.*"), constrains=("oldtool <2",)),
        ),
    ),
    PackageFamily(
        "oldtool", "A tool that hello 2 cannot live with in version 2", files=command_files, formats=TAR_BZ2_ONLY,
        releases=(Release("1.0"), Release("2.0")),
    ),
    PackageFamily(
        "conflict-low", "Needs an old greeting-data", noarch=True,
        releases=(Release("1.0", depends=("greeting-data <1.1",)),),
    ),
    PackageFamily(
        "conflict-high", "Needs a new greeting-data", noarch=True,
        releases=(Release("1.0", depends=("greeting-data >=2",)),),
    ),
    PackageFamily(
        "libmath", "Small maths kernels", files=shared_library_files, needs_minimum_osx=True,
        releases=(Release("1.0"), Release("1.1"), Release("1.2")),
    ),
    PackageFamily(
        "numlite", "Arrays on top of libmath", files=shared_library_files,
        releases=(
            Release("0.9", depends=("libmath >=1.0,<1.2",)),
            Release("1.0", depends=("libmath >=1.1",)),
            Release("1.2", depends=("libmath >=1.2",)),
        ),
    ),
    PackageFamily(
        "tinyjson", "A JSON reader", noarch=True, formats=BOTH_FORMATS,
        releases=(Release("1.0"), Release("1.1")),
    ),
    PackageFamily(
        "textutils", "Text helpers", noarch=True, files=command_files, formats=TAR_BZ2_ONLY,
        releases=(Release("1.0"), Release("1.1"), Release("1.2")),
    ),
    PackageFamily(
        "units", "Physical units", noarch=True,
        releases=(Release("0.1", depends=("numlite",)), Release("0.2", depends=("numlite >=1.0",))),
    ),
    PackageFamily(
        "datakit", "Tables of data", files=command_files,
        releases=(
            Release("0.1", depends=("numlite <1", "tinyjson")),
            Release("0.2", depends=("numlite >=1.0", "tinyjson >=1.0")),
            Release("0.3", depends=("numlite >=1.2", "tinyjson >=1.1")),
        ),
    ),
    PackageFamily(
        "colorterm", "Coloured terminal output", files=command_files, formats=TAR_BZ2_ONLY,
        releases=(Release("0.5", depends=("textutils",)), Release("0.6", depends=("textutils >=1.1",))),
    ),
    PackageFamily(
        "plotkit", "Terminal plots", files=command_files,
        releases=(
            Release("1.0", depends=("datakit >=0.2", "colorterm")),
            Release("1.1", depends=("datakit >=0.3", "colorterm >=0.6", "units")),
        ),
    ),
    PackageFamily(
        "configlib", "Configuration files", noarch=True,
        releases=(Release("2.0", depends=("tinyjson",)), Release("2.1", depends=("tinyjson >=1.1",))),
    ),
    PackageFamily(
        "compresslite", "Compression codecs", files=shared_library_files, formats=TAR_BZ2_ONLY,
        releases=(Release("1.2"), Release("1.3")),
    ),
    PackageFamily(
        "netlite", "A tiny HTTP client", files=command_files,
        releases=(
            Release("1.0", depends=("compresslite >=1.2", "configlib")),
            Release("1.1", depends=("compresslite >=1.3", "configlib >=2.1")),
        ),
    ),
    PackageFamily(
        "logkit", "Structured logging", noarch=True,
        releases=(Release("0.1", depends=("textutils",)), Release("0.2", depends=("textutils >=1.2", "colorterm"))),
    ),
    PackageFamily(
        "cachekit", "An on-disk cache", files=command_files,
        releases=(
            Release("1.0", depends=("netlite", "compresslite")),
            Release("1.1", depends=("netlite >=1.1", "logkit")),
        ),
    ),
    PackageFamily(
        "reportkit", "Reports with plots", noarch=True, formats=BOTH_FORMATS,
        releases=(
            Release("0.1", depends=("plotkit", "logkit")),
            Release("0.2", depends=("plotkit >=1.1", "logkit >=0.2")),
        ),
    ),
)

CATALOGUE: tuple[PackageDefinition, ...] = tuple(
    definition for family in FAMILIES for definition in family.definitions()
)

# Solving this on linux-64 (+ noarch) gives exactly these packages; `hello` prints
# "hello 2.1 prefix=<prefix> greeting-data=2.0". Written "2.1.*" because rattler's strict
# MatchSpec parser rejects a bare "hello 2.1" as ambiguous.
FIVE_PACKAGE_SPEC = ("hello 2.1.*", "tinyjson", "textutils")
FIVE_PACKAGE_SOLUTION = (
    ("greeting-data", "2.0"),
    ("hello", "2.1"),
    ("libhello", "2.1"),
    ("textutils", "1.2"),
    ("tinyjson", "1.1"),
)
# No greeting-data is both <1.1 and >=2.
UNSATISFIABLE_SPEC = ("conflict-low", "conflict-high")
# hello 2.x constrains oldtool <2.
CONSTRAINT_CONFLICT_SPEC = ("hello 2.*", "oldtool ==2.0")
