"""conda-store's ``default_permissions``, ``default_uid`` and ``default_gid`` applied to an installed
prefix (its ``action_set_conda_prefix_permissions``: ``chmod -R`` and ``chown -R``), so the
tarball and the installer made from it carry them too.

One difference, on purpose: conda-store's ``chmod -R 775`` makes every file executable; here the
execute bits go to directories and to files that were executable already (chmod's ``X``), so
``775`` gives data files ``664``. Symbolic links are not followed (their own owner changes).
Files hard-linked from the package cache share its inode, so the cache's copies change with
them, as with conda-store."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from envstore.common.events import BuildSettings
from envstore.common.settings import EnvstoreSettings

EXECUTE_BITS = 0o111


class PrefixPermissionError(PermissionError):
    """The prefix cannot be given the owner asked for; the message says what to change."""


@dataclass(frozen=True)
class PrefixPermissions:
    permissions: str | None = None  # "775"
    uid: int | None = None
    gid: int | None = None

    @property
    def changes_anything(self) -> bool:
        return self.permissions is not None or self.uid is not None or self.gid is not None

    def describe(self) -> str:
        parts = []
        if self.permissions is not None:
            parts.append(f"permissions {self.permissions}")
        if self.uid is not None or self.gid is not None:
            parts.append(f"owner {'-' if self.uid is None else self.uid}:{'-' if self.gid is None else self.gid}")
        return ", ".join(parts) or "nothing"


def prefix_permissions_of(build_settings: BuildSettings | None, settings: EnvstoreSettings) -> PrefixPermissions:
    """default_permissions, default_uid and default_gid as the build's submission recorded them
    (this builder's own settings for submissions that did not)."""
    if build_settings is None:
        return PrefixPermissions(settings.default_permissions, settings.default_uid, settings.default_gid)
    return PrefixPermissions(build_settings.prefix_permissions, build_settings.prefix_uid, build_settings.prefix_gid)


def apply_prefix_permissions(prefix: Path, wanted: PrefixPermissions) -> int:
    """Give every file and directory of ``prefix`` the mode and owner asked for (blocking: run it
    in a thread); the number of paths changed."""
    if not wanted.changes_anything:
        return 0
    mode = int(wanted.permissions, 8) if wanted.permissions is not None else None
    changed = 0
    for directory, directories, files in os.walk(prefix):
        paths = [directory] if directory == str(prefix) else []
        paths += [os.path.join(directory, name) for name in (*directories, *files)]
        for path in paths:
            changed += _apply(path, mode, wanted.uid, wanted.gid)
    return changed


def _apply(path: str, mode: int | None, uid: int | None, gid: int | None) -> int:
    status = os.lstat(path)
    changed = 0
    if uid is not None or gid is not None:
        owner = (status.st_uid if uid is None else uid, status.st_gid if gid is None else gid)
        if owner != (status.st_uid, status.st_gid):
            try:
                os.lchown(path, *owner)
            except PermissionError:
                raise PrefixPermissionError(
                    f"cannot give {path} to uid {owner[0]}, gid {owner[1]}: this process (uid {os.geteuid()}) may not "
                    "change owners; run the builder as root (or with CAP_CHOWN), or unset default_uid and default_gid"
                ) from None
            changed = 1
    if mode is not None and not stat.S_ISLNK(status.st_mode):
        executable = stat.S_ISDIR(status.st_mode) or status.st_mode & stat.S_IXUSR
        target = mode if executable else mode & ~EXECUTE_BITS
        if stat.S_IMODE(status.st_mode) != target:
            os.chmod(path, target)
            changed = 1
    return changed
