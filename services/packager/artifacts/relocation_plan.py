"""Where a conda-pack archive holds its build-time prefix, precomputed so that a POSIX shell can
relocate the unpacked environment without python.

conda-pack lists the files to rewrite in its ``bin/conda-unpack`` script (``_prefix_records``: path,
placeholder, mode). This module finds every placeholder in those files, as ``conda-unpack`` would,
reading them while they are packed (``packed_environment``; never the archive again), and writes the
rewrites as shell commands (helpers defined in ``installer_header.sh``):

- text mode: the placeholder is replaced by the prefix at each offset (the file changes size);
- binary mode: each NUL-terminated string that holds the placeholder is rewritten in place, the
  prefix in place of each placeholder and NULs padding it to its old length, so the file keeps its
  size and layout (what conda does; the prefix may not be longer than the placeholder).
"""

from __future__ import annotations

import ast
import re
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass

CONDA_UNPACK = "bin/conda-unpack"
# Bytes that a shell printf format may carry as themselves; everything else is written as \ooo
# (`-` too: a format that starts with it would read as an option).
PRINTF_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+=:,@")


@dataclass(frozen=True)
class TextRelocation:
    path: str
    placeholder_length: int
    offsets: tuple[int, ...]


@dataclass(frozen=True)
class PrefixString:
    """A NUL-terminated string of a binary file that embeds the placeholder."""

    start: int
    length: int  # up to and including the terminating NUL
    segments: tuple[bytes, ...]  # the bytes that follow each placeholder in the string


@dataclass(frozen=True)
class BinaryRelocation:
    path: str
    placeholder_length: int
    strings: tuple[PrefixString, ...]


@dataclass(frozen=True)
class RelocationPlan:
    text: tuple[TextRelocation, ...]
    binary: tuple[BinaryRelocation, ...]

    @property
    def longest_prefix(self) -> int | None:
        """The longest install prefix that fits in place of every binary placeholder (None: any)."""
        return min((relocation.placeholder_length for relocation in self.binary), default=None)

    def shell_commands(self) -> str:
        lines = []
        for text in self.text:
            offsets = " ".join(str(offset) for offset in text.offsets)
            lines.append(f"relocate_text {shlex.quote(text.path)} {text.placeholder_length} {offsets}")
        for binary in self.binary:
            for string in binary.strings:
                segments = " ".join(printf_format(segment) for segment in string.segments)
                lines.append(f"relocate_prefix_string {shlex.quote(binary.path)} {string.start} {string.length} {segments}")
            lines.append(f"relocated_binary {shlex.quote(binary.path)}")
        return "".join(f"{line}\n" for line in lines)


def relocation_plan(records: list[tuple[str, str, str]], content_of: Callable[[str], bytes]) -> RelocationPlan:
    """The plan for conda-unpack's ``records`` (path, placeholder, mode), given each path's bytes
    as packed (blocking: reads the files one at a time)."""
    text: list[TextRelocation] = []
    binary: list[BinaryRelocation] = []
    seen: set[str] = set()
    for path, placeholder, mode in records:
        if path in seen:
            raise ValueError(f"conda-unpack rewrites {path} twice; cannot plan its relocation")
        seen.add(path)
        content = content_of(path)
        if mode == "text":
            offsets = text_offsets(content, placeholder.encode())
            if offsets:
                text.append(TextRelocation(path, len(placeholder.encode()), offsets))
        elif mode == "binary":
            strings = prefix_strings(content, placeholder.encode())
            if strings:
                binary.append(BinaryRelocation(path, len(placeholder.encode()), strings))
        else:
            raise ValueError(f"conda-unpack record for {path} has unknown mode {mode!r}")
    return RelocationPlan(tuple(text), tuple(binary))


# CPython 3.11 before 3.11.8 can fail ast.parse with "SystemError: AST constructor recursion depth
# mismatch" when threads parse at once (gh-106905), and plans are made in worker threads, several
# builds at a time: one parse at a time, process-wide, as the bug is.
AST_PARSE_LOCK = threading.Lock()


def conda_unpack_records(script: bytes) -> list[tuple[str, str, str]]:
    """The ``_prefix_records`` list that conda-pack wrote into ``bin/conda-unpack``."""
    with AST_PARSE_LOCK:
        tree = ast.parse(script)
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == "_prefix_records" for target in statement.targets)
        ):
            return [tuple(record) for record in ast.literal_eval(statement.value)]
    raise ValueError(f"{CONDA_UNPACK} has no _prefix_records list; is this conda-pack's script?")


def text_offsets(content: bytes, placeholder: bytes) -> tuple[int, ...]:
    """Where ``bytes.replace`` (conda's text relocation) would replace the placeholder."""
    offsets = []
    position = content.find(placeholder)
    while position >= 0:
        offsets.append(position)
        position = content.find(placeholder, position + len(placeholder))
    return tuple(offsets)


def prefix_strings(content: bytes, placeholder: bytes) -> tuple[PrefixString, ...]:
    """The strings conda's binary relocation rewrites: the placeholder, then anything up to a NUL."""
    pattern = re.compile(re.escape(placeholder) + b"([^\0]*?)\0")
    return tuple(
        PrefixString(match.start(), len(match.group()), tuple(match.group()[:-1].split(placeholder)[1:]))
        for match in pattern.finditer(content)
    )


def printf_format(data: bytes) -> str:
    """A single-quoted shell word that, as a printf format, prints exactly ``data``."""
    return "'" + "".join(chr(byte) if byte in PRINTF_SAFE_BYTES else f"\\{byte:03o}" for byte in data) + "'"
