"""The collector settings every long-running envstore process applies at its start."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from envstore.common.collector_tuning import YOUNG_COLLECTION_THRESHOLD, tune_collector_for_a_long_run


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Cycle:
    def __init__(self) -> None:
        self.itself = self


@pytest.mark.usefixtures("restored_collector")
def test_tuning_freezes_the_start_up_heap_and_collects_young_objects_less_often() -> None:
    assert gc.get_freeze_count() == 0

    tune_collector_for_a_long_run()

    assert gc.get_freeze_count() > 1_000  # modules, classes and functions loaded so far
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD > 700


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_after_tuning_are_still_freed() -> None:
    tune_collector_for_a_long_run()

    cycle = Cycle()
    alive = weakref.ref(cycle)
    del cycle
    assert alive() is not None  # only the collector can free a cycle

    gc.collect()

    assert alive() is None
