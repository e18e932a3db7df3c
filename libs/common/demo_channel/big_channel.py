"""A big channel shaped like a real data-science environment, for the big-environment benchmark.

    channel = await make_big_channel(directory)          # ~120 packages, ~700 MB installed
    channel.url, channel.specs                           # solve channel.specs: every package comes

Real environments of a hundred packages weigh most in a few big compiled libraries and spread the
rest over thousands of small files. This channel copies that shape, reproducibly from a seed:

- package sizes are log-normal (a few packages of tens of MB, many of a few hundred KB), scaled to
  ``installed_bytes`` in total;
- each package holds large "shared libraries" (most of its bytes; a share of them with binary prefix
  placeholders, NUL-terminated as conda-build leaves them), a launcher script and a pkg-config file
  with text placeholders, and many small source and data files;
- contents mix incompressible bytes, zeros and lines of identifiers, so that they compress about as
  fast and as well as real binaries do (gzip -6 at ~50 MB/s, ~2.2x; ~700 MB installed from
  ~290 MB of zstd-compressed packages);
- packages depend on earlier ones (a random DAG); the spec names those nobody depends on, so its
  solution is the whole channel.

Writing runs in worker processes, a batch of packages each (the text pool is made once per batch).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import pathlib
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import rattler.index

from .catalogue import (
    NOARCH_SUBDIR,
    PREFIX_PLACEHOLDER,
    TAR_BZ2_ONLY,
    ArchiveFormat,
    FileMode,
    PackageDefinition,
    PackageFile,
)
from .channel import pin_indexed_timestamps
from .package_writer import write_package

KIB = 1024
MIB = 1024 * KIB
BIG_PLATFORM_SUBDIR = "linux-64"
BLOCK_BYTES = 16 * KIB
# bzip2 is slow: only small packages come as .tar.bz2 (conda-forge still has some).
TAR_BZ2_LARGEST = 512 * KIB


@dataclass(frozen=True)
class BigChannelShape:
    """What the channel looks like; the defaults are issue 19's real-size environment."""

    package_count: int = 120
    installed_bytes: int = 700 * 1000 * 1000
    seed: int = 19
    size_sigma: float = 1.6  # of the log-normal package sizes
    # Of a data or library file's 16 KiB blocks: random bytes, zeros (padding, empty tables), else text.
    incompressible_share: float = 0.18
    zero_share: float = 0.04
    library_share: float = 0.75  # of a package's bytes in its shared libraries
    placeholder_library_share: float = 0.3  # of the libraries, with a binary prefix placeholder
    noarch_share: float = 0.2
    small_file_median_bytes: int = 6 * KIB
    # Each worker draws text from this many bytes: far more than a compressor's window, so that
    # compressors see text, not one repeated block.
    text_pool_bytes: int = 16 * MIB

    @classmethod
    def small(cls) -> BigChannelShape:
        """A few MB with the same features, for tests."""
        return cls(package_count=8, installed_bytes=6 * 1000 * 1000, text_pool_bytes=2 * MIB)


@dataclass(frozen=True)
class BigPackagePlan:
    """One package before its files exist (cheap to send to a worker process)."""

    index: int
    size: int
    depends: tuple[str, ...]
    noarch: bool

    @property
    def name(self) -> str:
        return f"big-{self.index:03}"

    @property
    def subdir(self) -> str:
        return NOARCH_SUBDIR if self.noarch else BIG_PLATFORM_SUBDIR

    @property
    def formats(self) -> tuple[ArchiveFormat, ...]:
        return TAR_BZ2_ONLY if self.size <= TAR_BZ2_LARGEST and self.index % 4 == 0 else (ArchiveFormat.CONDA,)


@dataclass(frozen=True)
class BigChannel:
    url: str
    specs: tuple[str, ...]  # solving these gives every package of the channel
    package_count: int
    installed_bytes: int  # of the packages' files
    package_bytes: int  # of the package archives


def plan_packages(shape: BigChannelShape) -> list[BigPackagePlan]:
    chooser = random.Random(shape.seed)
    weights = [chooser.lognormvariate(0.0, shape.size_sigma) for _ in range(shape.package_count)]
    scale = shape.installed_bytes / sum(weights)
    plans = []
    for index, weight in enumerate(weights):
        earlier = [f"big-{other:03}" for other in range(index)]
        depends = tuple(sorted(chooser.sample(earlier, min(len(earlier), chooser.randint(0, 4)))))
        noarch = chooser.random() < shape.noarch_share
        plans.append(BigPackagePlan(index, max(int(weight * scale), 4 * KIB), depends, noarch))
    return plans


def top_level_specs(plans: list[BigPackagePlan]) -> tuple[str, ...]:
    needed = {dependency for plan in plans for dependency in plan.depends}
    return tuple(plan.name for plan in plans if plan.name not in needed)


class ContentMaker:
    """File contents: 16 KiB blocks, incompressible or slices of a pool of word-like text."""

    def __init__(self, shape: BigChannelShape, seed: int) -> None:
        self.shape = shape
        self.random = random.Random(seed)
        self.pool = text_pool(random.Random(shape.seed), shape.text_pool_bytes)

    def text(self, size: int) -> bytes:
        start = self.random.randrange(0, len(self.pool) - size) if size < len(self.pool) else 0
        return self.pool[start : start + size]

    def mixed(self, size: int) -> bytes:
        blocks = []
        for offset in range(0, size, BLOCK_BYTES):
            length = min(BLOCK_BYTES, size - offset)
            draw = self.random.random()
            if draw < self.shape.incompressible_share:
                blocks.append(self.random.randbytes(length))
            elif draw < self.shape.incompressible_share + self.shape.zero_share:
                blocks.append(bytes(length))
            else:
                blocks.append(self.text(length))
        return b"".join(blocks)

    def small_size(self) -> int:
        size = self.random.lognormvariate(math.log(self.shape.small_file_median_bytes), 1.2)
        return int(min(max(size, 64), 256 * KIB))


def text_pool(chooser: random.Random, size: int) -> bytes:
    """Lines of identifiers, some repeated often, some numbered: text that gzip compresses ~2.4x at
    ~45 MB/s (level 6), about as it does real shared libraries and sources."""
    letters = "abcdefghijklmnopqrstuvwxyz_"
    words = ["".join(chooser.choices(letters, k=chooser.randint(2, 11))) for _ in range(2000)]
    lines = [" ".join(chooser.choices(words, k=chooser.randint(3, 12))) + "\n" for _ in range(100_000)]
    weights = [1.0 / (rank + 1) ** 0.5 for rank in range(len(lines))]
    picked = chooser.choices(lines, weights, k=size // 40)
    text = "".join(f"{chooser.randrange(1 << 32):08x} {line}" if chooser.random() < 0.8 else line for line in picked)
    encoded = text.encode()
    return (encoded * (size // len(encoded) + 1))[:size]


def package_definition(plan: BigPackagePlan, shape: BigChannelShape, maker: ContentMaker) -> PackageDefinition:
    name = plan.name
    files: list[PackageFile] = []
    remaining = plan.size
    if not plan.noarch:
        script = (
            "#!/bin/sh\n"
            f"# {name}: a launcher whose prefix conda rewrites on install\n"
            f"prefix='{PREFIX_PLACEHOLDER}'\n"
            f'exec "$prefix/bin/true-{name}" "$@"\n'
        ).encode()
        config = (
            f"prefix={PREFIX_PLACEHOLDER}\nlibdir=${{prefix}}/lib\nincludedir=${{prefix}}/include\n\n"
            f"Name: {name}\nVersion: 1.0\nLibs: -L${{libdir}} -l{name}\n"
        ).encode()
        files.append(PackageFile(f"bin/{name}", script, executable=True, placeholder_mode=FileMode.TEXT))
        files.append(PackageFile(f"lib/pkgconfig/{name}.pc", config, placeholder_mode=FileMode.TEXT))
        remaining -= len(script) + len(config)
        library_bytes = int(remaining * shape.library_share) if plan.size > 256 * KIB else 0
        library_count = max(1, min(4, library_bytes // (8 * MIB) + 1)) if library_bytes else 0
        for number in range(library_count):
            size = library_bytes // library_count
            with_placeholder = maker.random.random() < shape.placeholder_library_share
            content = library_content(maker, size, with_placeholder)
            files.append(
                PackageFile(
                    f"lib/lib{name.replace('-', '_')}_{number}.so.1",
                    content,
                    executable=True,
                    placeholder_mode=FileMode.BINARY if with_placeholder else None,
                )
            )
            remaining -= len(content)
    number = 0
    while remaining > 0:
        size = min(maker.small_size(), remaining)
        if number % 3 == 2:
            path, content = f"share/{name}/data/part_{number:05}.bin", maker.mixed(size)
        else:
            path, content = f"lib/python3.12/site-packages/{name.replace('-', '_')}/module_{number:05}.py", maker.text(size)
        files.append(PackageFile(path, content))
        remaining -= size
        number += 1
    return PackageDefinition(
        name=name,
        version="1.0",
        subdir=plan.subdir,
        files=tuple(files),
        depends=plan.depends,
        formats=plan.formats,
        summary=f"Package {plan.index} of the big benchmark environment",
    )


def library_content(maker: ContentMaker, size: int, with_placeholder: bool) -> bytes:
    """An ELF-looking blob; with a placeholder, a NUL-terminated prefix string every few MB (RPATH,
    data directories), as conda-build leaves them for binary relocation."""
    body = maker.mixed(size)
    if not with_placeholder:
        return b"\x7fELF\x02\x01\x01\x00" + body[8:]
    # A NUL first, so that the placeholder starts a string of its own.
    marker = b"\x00" + PREFIX_PLACEHOLDER.encode() + b"/lib\x00"
    pieces = [b"\x7fELF\x02\x01\x01\x00"]
    for start in range(8, len(body), 4 * MIB):
        piece = body[start : start + 4 * MIB]
        pieces.append(piece[: len(piece) - len(marker)] + marker if len(piece) > len(marker) else piece)
    return b"".join(pieces)


def write_batch(plans: list[BigPackagePlan], shape: BigChannelShape, directory: pathlib.Path) -> int:
    """Writes these packages (in a worker process); returns the bytes of their archives."""
    written = 0
    maker = ContentMaker(shape, seed=shape.seed * 1000 + (plans[0].index if plans else 0))
    for plan in plans:
        maker.random.seed(shape.seed * 100_000 + plan.index)  # each package the same whoever writes it
        definition = package_definition(plan, shape, maker)
        for archive_format in definition.formats:
            written += write_package(definition, archive_format, directory / definition.subdir).stat().st_size
    return written


async def make_big_channel(directory: pathlib.Path, shape: BigChannelShape | None = None) -> BigChannel:
    """Writes and indexes the big channel in ``directory`` (reproducible from ``shape.seed``)."""
    shape = shape or BigChannelShape()
    directory = pathlib.Path(directory).resolve()
    for subdir in (NOARCH_SUBDIR, BIG_PLATFORM_SUBDIR):
        (directory / subdir).mkdir(parents=True, exist_ok=True)
    plans = plan_packages(shape)
    workers = max(1, min(multiprocessing.cpu_count(), len(plans)))
    # Big packages first, dealt round-robin, so that the workers finish together.
    by_size = sorted(plans, key=lambda plan: -plan.size)
    batches = [by_size[worker::workers] for worker in range(workers)]
    loop = asyncio.get_running_loop()
    # spawn: the caller may be a threaded program (rattler, asyncio), where fork is unsafe.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        written = await asyncio.gather(
            *(loop.run_in_executor(pool, write_batch, batch, shape, directory) for batch in batches)
        )
    await rattler.index.index_fs(directory, write_zst=False, write_shards=False, force=True)
    await asyncio.to_thread(pin_indexed_timestamps, directory)
    return BigChannel(
        url=directory.as_uri(),
        specs=top_level_specs(plans),
        package_count=len(plans),
        installed_bytes=sum(plan.size for plan in plans),
        package_bytes=sum(written),
    )
