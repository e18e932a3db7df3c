"""conda-store's web UI, pinned: the built files (``dist/main.js``, ``dist/main.css`` and their
licences) of the npm package ``@conda-store/conda-store-ui``, fetched with npm and checked against
the integrity recorded here, plus gzip copies that the API serves to browsers that accept them.

One fetch for every way envstore is put together: ``scripts/fetch-ui.sh`` (a source checkout,
into ``services/api/static/conda-store-ui``) and the setuptools hooks in ``setup.py`` (every sdist
and wheel). Nothing of npm's is kept: no node_modules, no package.json. Standard library only, as
it runs inside build environments.

    python3 scripts/fetch_ui.py [TARGET_DIRECTORY]
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "2024.11.1"
INTEGRITY = "sha512-E78O3ezyrzAyMPkydTvZJdpKj63kKtCKF6bSZ1R+x8olre8vTo/4LyZdlf6VAPebeNYqGos5ENcEJF6JYr9aRA=="
PACKAGE = "@conda-store/conda-store-ui"
SOURCE_DIRECTORY = Path("services/api/static/conda-store-ui")  # in a checkout and an sdist
# From the npm tarball: its path there → the file name served.
FILES = {
    "package/dist/main.js": "main.js",
    "package/dist/main.css": "main.css",
    "package/dist/main.js.LICENSE.txt": "main.js.LICENSE.txt",
    "package/LICENSE": "LICENSE",
}
GZIPPED = ("main.js", "main.css")  # 1.7 MB of JavaScript becomes about 0.5 MB


class UiFetchError(RuntimeError):
    pass


def is_complete(directory: Path) -> bool:
    """``directory`` holds this pinned release, every file of it."""
    version = directory / "VERSION"
    return (
        version.is_file()
        and version.read_text().strip() == VERSION
        and all((directory / name).is_file() for name in [*FILES.values(), *(f"{name}.gz" for name in GZIPPED)])
    )


def npm_integrity(path: Path) -> str:
    """npm's ``integrity`` form: ``sha512-`` and the base64 of the digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_tarball(work: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise UiFetchError(
            f"npm is needed to fetch {PACKAGE} {VERSION} (conda-store's web UI): install it "
            "(Debian: apt-get install npm), or build from an envstore sdist, which carries the UI"
        )
    completed = subprocess.run(
        [npm, "pack", "--silent", "--loglevel=error", f"{PACKAGE}@{VERSION}"],
        cwd=work, capture_output=True, text=True, check=False,
    )
    tarballs = list(work.glob("*.tgz"))
    if completed.returncode != 0 or len(tarballs) != 1:
        raise UiFetchError(f"npm pack {PACKAGE}@{VERSION} failed: {completed.stderr.strip() or completed.stdout.strip()}")
    actual = npm_integrity(tarballs[0])
    if actual != INTEGRITY:
        raise UiFetchError(f"{tarballs[0].name} has integrity {actual}, expected {INTEGRITY}")
    return tarballs[0]


def unpack(tarball: Path, target: Path) -> None:
    with tarfile.open(tarball, "r:gz") as archive:
        for member_name, file_name in FILES.items():
            source = archive.extractfile(member_name)
            if source is None:
                raise UiFetchError(f"{tarball.name} has no {member_name}")
            (target / file_name).write_bytes(source.read())
    for name in GZIPPED:
        # mtime 0: the same bytes on every build.
        (target / f"{name}.gz").write_bytes(gzip.compress((target / name).read_bytes(), 9, mtime=0))
    (target / "VERSION").write_text(f"{VERSION}\n")


def vendor(target: Path, source: Path | None = None) -> str:
    """Make ``target`` hold the pinned UI: nothing to do if it does, a copy of ``source`` if that
    holds it (an earlier fetch), else a fresh, checked fetch. Returns what was done."""
    if is_complete(target):
        return f"conda-store-ui {VERSION} already in {target}"
    staged = target.with_name(target.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    if source is not None and is_complete(source):
        for name in [*FILES.values(), *(f"{name}.gz" for name in GZIPPED), "VERSION"]:
            shutil.copyfile(source / name, staged / name)
        done = f"conda-store-ui {VERSION} copied from {source} to {target}"
    else:
        with tempfile.TemporaryDirectory(prefix="envstore-ui-") as work:
            unpack(fetch_tarball(Path(work)), staged)
        done = f"conda-store-ui {VERSION} fetched ({INTEGRITY[:19]}…) into {target}"
    shutil.rmtree(target, ignore_errors=True)
    staged.rename(target)
    return done


def main(arguments: list[str]) -> int:
    target = Path(arguments[0]) if arguments else Path(__file__).resolve().parent.parent / SOURCE_DIRECTORY
    try:
        print(vendor(target))
    except UiFetchError as error:
        print(f"fetch-ui: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
