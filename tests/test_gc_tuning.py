"""The poller program's GC tuning (poller.cli.run.tune_gc): a larger young
generation, the older generations as they were. Why: bench/README.md, issue 22."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from poller.cli.run import YOUNG_GC_THRESHOLD, tune_gc


@pytest.fixture
def threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


@pytest.mark.usefixtures("threshold")
def test_tune_gc_raises_the_young_threshold_and_keeps_the_older_ones() -> None:
    gc.set_threshold(700, 7, 9)
    tune_gc()
    assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, 7, 9)


@pytest.mark.usefixtures("threshold")
def test_tune_gc_never_lowers_a_larger_threshold_set_by_the_user() -> None:
    gc.set_threshold(50_000, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (50_000, 10, 10)


def test_settling_after_the_first_wave_freezes_what_is_alive() -> None:
    from poller.daemon.memory import settle_after_first_wave

    kept = [object() for _ in range(10)]  # noqa: F841 - alive while frozen
    gc.unfreeze()
    try:
        frozen = settle_after_first_wave()
        assert frozen > 0
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
