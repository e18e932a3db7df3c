"""Which files the watcher builds: as conda-store's ``discover_environments``, each watched path
is an environment file itself or a directory whose ``*.yaml`` / ``*.yml`` files (not those of
its subdirectories) are environment files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENVIRONMENT_FILE_SUFFIXES = (".yaml", ".yml")


class WatchPathError(ValueError):
    """A watched path that cannot be watched; the message says what to change."""


@dataclass(frozen=True)
class WatchedPaths:
    directories: tuple[Path, ...]
    files: tuple[Path, ...]

    @classmethod
    def from_setting(cls, paths: list[str]) -> WatchedPaths:
        directories: list[Path] = []
        files: list[Path] = []
        for text in paths:
            path = Path(text).expanduser().resolve()
            if path.is_dir():
                directories.append(path)
            elif path.is_file() and path.suffix in ENVIRONMENT_FILE_SUFFIXES:
                files.append(path)
            else:
                raise WatchPathError(
                    f"ENVSTORE_WATCH_PATHS names {text}, which is neither a directory nor a .yaml/.yml file; "
                    "create it or remove it from the list"
                )
        return cls(tuple(dict.fromkeys(directories)), tuple(dict.fromkeys(files)))

    @property
    def roots(self) -> tuple[Path, ...]:
        """What to watch for changes: the directories, and each file's directory."""
        return tuple(dict.fromkeys([*self.directories, *(file.parent for file in self.files)]))

    def is_environment_file(self, path: Path) -> bool:
        if path in self.files:
            return True
        return path.suffix in ENVIRONMENT_FILE_SUFFIXES and path.parent in self.directories and not path.name.startswith(".")

    def unreadable_directories(self) -> list[Path]:
        """Watched directories that cannot be listed now (an unmounted volume looks like this)."""
        unreadable = []
        for directory in self.roots:
            try:
                next(iter(directory.iterdir()), None)
            except OSError:
                unreadable.append(directory)
        return unreadable

    def environment_files(self) -> list[Path]:
        """Every environment file there now, in a stable order (the first file to name an
        environment keeps it)."""
        found = [file for file in self.files if file.is_file()]
        for directory in self.directories:
            found.extend(path for path in directory.iterdir() if path.is_file() and self.is_environment_file(path))
        return sorted(dict.fromkeys(found))
