"""A build's LOGS document: the readable sum of what every worker reported, a failure at the top."""

from __future__ import annotations

from envstore.common.build_reporter import BuildReporter
from envstore.common.build_policy import BuildFailure
from envstore.common.events import BlobRef
from envstore.common.storage import Storage


async def compose_log(
    storage: Storage, earlier_parts: list[BlobRef], reporter: BuildReporter, header: str = ""
) -> BlobRef:
    sections = [header.rstrip() + "\n"] if header else []
    for part in earlier_parts:
        sections.append((await storage.get_bytes(part)).decode(errors="replace"))
    sections.append("\n".join(reporter.lines) + "\n")
    return await storage.put_bytes("".join(sections).encode())


def failure_header(failure: BuildFailure) -> str:
    return f"BUILD FAILED during {failure.phase}: {failure.reason}\n"


async def attach_failure_log(
    failure: BuildFailure, storage: Storage, earlier_parts: list[BlobRef], reporter: BuildReporter
) -> None:
    failure.log = await compose_log(storage, earlier_parts, reporter, failure_header(failure))
