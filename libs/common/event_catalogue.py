"""The event catalogue as a table for docs/ARCHITECTURE.md, made from ``events.py`` (the one
definition); a test keeps the document equal to it.

    python -m envstore.common.event_catalogue    # prints the table
"""

from __future__ import annotations

from envstore.common.events import EVENT_TYPES, WORKER_SUBSCRIPTIONS, Event, subject_patterns

BEGIN = "<!-- event catalogue: made by `python -m envstore.common.event_catalogue`; tests/common/test_architecture_doc.py checks it -->"
END = "<!-- end of event catalogue -->"


def _consumers(event_type: type[Event]) -> list[str]:
    workers = [service for service, consumed in WORKER_SUBSCRIPTIONS.items() if event_type in consumed]
    return [*workers, "api (projector)"]


def _publishers(event_type: type[Event]) -> str:
    return ", ".join(
        f"{service} (in `{event_type.PUBLISHED_IN_NAMESPACE[service]}` only)"
        if service in event_type.PUBLISHED_IN_NAMESPACE
        else service
        for service in event_type.PUBLISHED_BY
    )


def _fields(event_type: type[Event]) -> str:
    own = [name for name in event_type.__struct_fields__ if name not in ("version", "occurred_at", "principal")]
    return ", ".join(f"`{name}`" for name in own)


def catalogue_markdown() -> str:
    lines = [
        BEGIN,
        "",
        "| type | subject | published by | consumed by | once per | fields |",
        "|---|---|---|---|---|---|",
    ]
    for event_type in EVENT_TYPES:
        subjects = "<br>".join(f"`{subject}`" for subject in subject_patterns(event_type))
        once = ""
        if event_type.ONCE:
            slot = event_type.slot_pattern()
            once = "build" if slot is None else ("build and kind (and platform)" if slot == "*" else "build (its outcome)")
        lines.append(
            f"| `{event_type.tag()}` | {subjects} | {_publishers(event_type)} | "
            f"{', '.join(_consumers(event_type))} | {once} | {_fields(event_type)} |"
        )
    lines += ["", END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(catalogue_markdown())
