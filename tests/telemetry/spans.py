"""Reading the spans that the services of an embedded stack wrote with the ``envstore-jsonl``
exporter (one file per process), and walking them as trees."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RecordedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start: int
    end: int
    status: str
    attributes: dict[str, Any]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RecordedSpan:
        return cls(
            service=record["service"],
            name=record["name"],
            kind=record["kind"],
            trace_id=record["trace_id"],
            span_id=record["span_id"],
            parent_span_id=record["parent_span_id"],
            start=record["start_time_unix_nano"],
            end=record["end_time_unix_nano"],
            status=record["status"],
            attributes=record["attributes"],
        )


def read_spans(directory: Path) -> list[RecordedSpan]:
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.endswith("}"):  # a line still being written is skipped until complete
                spans.append(RecordedSpan.from_record(json.loads(line)))
    return spans


async def wait_for_spans(
    directory: Path, condition: Callable[[list[RecordedSpan]], bool], timeout_seconds: float = 60
) -> list[RecordedSpan]:
    """Every span recorded, once they satisfy ``condition`` (a span is written when it ends: a
    consumer's, after it acknowledges, shortly after the build's outcome is visible)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        spans = read_spans(directory)
        if condition(spans):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"the spans in {directory} did not get there in {timeout_seconds} s")
        await asyncio.sleep(0.05)


def ancestry(span: RecordedSpan, by_id: dict[str, RecordedSpan]) -> list[RecordedSpan]:
    """``span`` and its ancestors, root first."""
    chain = [span]
    while chain[-1].parent_span_id is not None:
        parent = by_id.get(chain[-1].parent_span_id)
        assert parent is not None, (
            f"{chain[-1].service} {chain[-1].name!r} has a parent that no service recorded"
        )
        chain.append(parent)
    return chain[::-1]
