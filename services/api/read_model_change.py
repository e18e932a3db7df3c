"""What a commit of the projection changed, as the caches of answers (``answer_cache.py``) need to
know it: which builds' own answers, whether anything a listing, an environment or a queued build
shows, whether access (namespaces, role mappings), or anything at all (when it cannot be told)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadModelChange:
    builds: frozenset[int] = frozenset()  # builds whose row, artifacts or packages changed
    listings: bool = False  # rows that listings, environments or queued builds show
    access: bool = False  # namespaces or role mappings
    everything: bool = False

    def __or__(self, other: ReadModelChange) -> ReadModelChange:
        return ReadModelChange(
            self.builds | other.builds,
            self.listings or other.listings,
            self.access or other.access,
            self.everything or other.everything,
        )

    @property
    def nothing(self) -> bool:
        return not (self.builds or self.listings or self.access or self.everything)


NOTHING = ReadModelChange()
EVERYTHING = ReadModelChange(everything=True)
