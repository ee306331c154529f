"""Shared stream results (``pipeline.features.shared``): inside ``with sharing():`` a fresh ``Window`` given a
series another fresh ``Window`` with the same settings was given returns that first result (read-only) instead
of computing it again; anything else (other settings, another series, the same memory changed in place, a stream
that has already seen values) is computed as it is without the block, bit for bit, on real closes."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from functools import cache

import numpy as np
import pandas as pd
import pytest

from pipeline.features.shared import sharing
from pipeline.features.streaming import Window
from tests.conftest import shared_file

SETTINGS = [(20, 0, False), (20, 0, True), (20, 1, True), (21, 0, False), (21, 1, True), (5, 1, True), (1, 0, True)]


@cache
def _closes() -> np.ndarray:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"), columns=["close"])
    closes = bars["close"].to_numpy(dtype=np.float64)[30_000:32_000].copy()
    closes.flags.writeable = False
    return closes


def closes() -> np.ndarray:
    """2000 real BTC/USDT hourly closes: a fresh, writable, contiguous array per call."""
    return _closes().copy()


def plain(x: np.ndarray, window: int, ddof: int = 0, with_std: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """What a fresh ``Window`` gives without sharing (copies, so nothing can alias a shared result)."""
    mean, std = Window(window, ddof, with_std).update(x.copy())
    return mean.copy(), std.copy()


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.array_equal(np.asarray(got, dtype=np.float64).view(np.uint64), want.view(np.uint64))


def test_two_fresh_windows_on_one_series_share_the_first_result() -> None:
    x = closes()
    want = plain(x, 20, 1, True)
    with sharing():
        first = Window(20, 1, with_std=True).update(x)
        second = Window(20, 1, with_std=True).update(x)
    assert second[0] is first[0] and second[1] is first[1]  # given back, not computed again
    for got in (*first, *second):
        assert not got.flags.writeable
    assert_same_bits(first[0], want[0])
    assert_same_bits(first[1], want[1])
    assert np.isnan(first[0][:19]).all() and not np.isnan(first[0][19:]).any()


def test_results_inside_the_block_are_read_only() -> None:
    x = closes()
    with sharing():
        mean, std = Window(10, 0, with_std=True).update(x)
        again, _ = Window(10, 0, with_std=True).update(x)
        for result in (mean, std, again):
            with pytest.raises(ValueError, match="read-only"):
                result[-1] = 0.0
            with pytest.raises(ValueError, match="read-only"):
                result += 1.0
        assert_same_bits(mean, plain(x, 10, 0, True)[0])  # the failed writes changed nothing
    with pytest.raises(ValueError, match="read-only"):  # still read-only after the block: it was handed out so
        mean[0] = 1.0


def test_a_series_changed_in_place_is_computed_anew() -> None:
    x = closes()
    before = plain(x, 12, 1, True)
    with sharing():
        old = Window(12, 1, with_std=True).update(x)
        x[1000] *= 1.01  # the same memory, other values
        after = plain(x, 12, 1, True)
        new = Window(12, 1, with_std=True).update(x)
        assert new[0] is not old[0]
        assert_same_bits(new[0], after[0])
        assert_same_bits(new[1], after[1])
        assert not np.array_equal(new[0], before[0])
        assert_same_bits(old[0], before[0])  # the first stream's result is untouched
        x[1000] = np.nan
        x[5] = np.nextafter(x[5], np.inf)  # a change in the last bit only
        newest = Window(12, 1, with_std=True).update(x)
        assert newest[0] is not new[0]
        assert_same_bits(newest[0], plain(x, 12, 1, True)[0])
        assert_same_bits(newest[1], plain(x, 12, 1, True)[1])
        assert Window(12, 1, with_std=True).update(x)[0] is newest[0]


def test_other_settings_and_other_series_are_not_confused() -> None:
    x = closes()
    later = x[1:]  # other memory, overlapping values
    head = x[:700]  # the same memory, a shorter series
    series = {"whole": x, "later": later, "head": head}
    want = {(name, s): plain(values, *s) for name, values in series.items() for s in SETTINGS}
    with sharing():
        for _ in range(2):  # the second round recalls; both rounds must give each its own result
            got = {(name, s): Window(*s).update(values) for name, values in series.items() for s in SETTINGS}
            for key, (mean, std) in got.items():
                assert_same_bits(mean, want[key][0])
                assert_same_bits(std, want[key][1])
        ids = {id(mean) for mean, _ in got.values()}
        assert len(ids) == len(got)
    assert np.isnan(want[("whole", (20, 0, False))][1]).all()  # no deviation asked for
    assert not np.isnan(want[("whole", (20, 0, True))][1][19:]).any()
    assert not np.array_equal(want[("whole", (20, 0, True))][1], want[("whole", (20, 1, True))][1], equal_nan=True)


def test_nothing_is_shared_outside_the_block() -> None:
    x = closes()
    first = Window(20, 1, with_std=True).update(x)
    second = Window(20, 1, with_std=True).update(x)
    assert first[0] is not second[0] and first[1] is not second[1]
    for result in (*first, *second):
        assert result.flags.writeable
    first[0][-1] = -1.0  # a caller may write into its own result
    assert second[0][-1] != -1.0
    assert_same_bits(second[0], plain(x, 20, 1, True)[0])
    with sharing():
        inside = Window(20, 1, with_std=True).update(x)
    assert inside[0] is not second[0]
    after = Window(20, 1, with_std=True).update(x)
    assert after[0] is not inside[0] and after[0].flags.writeable


def chunked(x: np.ndarray, cuts: list[int], window: int, ddof: int = 0,
            with_std: bool = False) -> tuple[np.ndarray, np.ndarray]:
    stream = Window(window, ddof, with_std)
    parts = [stream.update(x[a:b]) for a, b in zip([0, *cuts], [*cuts, len(x)], strict=True)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.mark.parametrize(("window", "ddof", "with_std"), [(20, 0, False), (20, 1, True), (1, 0, True), (2, 1, True)])
def test_a_stream_that_has_seen_values_continues_as_without_the_block(window: int, ddof: int, with_std: bool) -> None:
    x = closes()
    cuts = [300, 301, 1200]
    want = chunked(x, cuts, window, ddof, with_std)
    whole = plain(x, window, ddof, with_std)
    assert_same_bits(want[0], whole[0])  # chunking changes nothing (the streaming contract)
    with sharing():
        # fresh streams seed the block with every chunk as a series of its own, from the first bar
        seeded = {(a, b): Window(window, ddof, with_std).update(x[a:b])
                  for a, b in zip([0, *cuts], [*cuts, len(x)], strict=True)}
        got = chunked(x, cuts, window, ddof, with_std)
        again = chunked(x, cuts, window, ddof, with_std)
    assert_same_bits(got[0], want[0])
    assert_same_bits(got[1], want[1])
    assert_same_bits(again[0], want[0])
    if window > 1:  # a fresh stream over a later chunk has a warm-up of NaN: recalled there, it would show
        assert np.isnan(seeded[(1200, len(x))][0][: window - 1]).all()
        assert not np.isnan(got[0][1200:1200 + window]).any()


def test_a_restored_stream_is_not_fresh() -> None:
    x = closes()
    warm = Window(30, 1, with_std=True)
    warm.update(x[:500])
    state = warm.state()
    want = warm.update(x[500:])
    with sharing():
        Window(30, 1, with_std=True).update(x[500:])  # the fresh result over the same memory
        restored = Window(30, 1, with_std=True)
        restored.restore(state)
        got = restored.update(x[500:])
    assert_same_bits(got[0], want[0])
    assert_same_bits(got[1], want[1])


def test_an_empty_update_leaves_a_stream_fresh() -> None:
    x = closes()
    with sharing():
        first = Window(8).update(x)
        stream = Window(8)
        assert stream.update(x[:0])[0].shape == (0,)
        assert stream.update(x)[0] is first[0]


def in_threads(jobs: list[Callable[[], tuple[np.ndarray, np.ndarray]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [f.result() for f in [pool.submit(copy_context().run, job) for job in jobs]]


def test_threads_started_with_a_copy_of_the_context_share_the_results() -> None:
    x = closes()
    want = plain(x, 24, 1, True)
    with sharing():
        mine = Window(24, 1, with_std=True).update(x)
        theirs = in_threads([lambda: Window(24, 1, with_std=True).update(x) for _ in range(6)])
        assert all(result[0] is mine[0] and result[1] is mine[1] for result in theirs)
        # and what a thread computes first, the block keeps for everyone
        (computed,) = in_threads([lambda: Window(7, 0, with_std=True).update(x)])
        assert not computed[0].flags.writeable
        assert Window(7, 0, with_std=True).update(x)[0] is computed[0]
        assert in_threads([lambda: Window(7, 0, with_std=True).update(x)])[0][0] is computed[0]
    assert_same_bits(mine[0], want[0])
    assert_same_bits(computed[1], plain(x, 7, 0, True)[1])
    outside = in_threads([lambda: Window(24, 1, with_std=True).update(x) for _ in range(2)])
    assert outside[0][0] is not outside[1][0] and outside[0][0].flags.writeable


def fail_inside_a_block(x: np.ndarray) -> None:
    with sharing():
        Window(16).update(x)
        raise RuntimeError("left by an exception")


def test_nesting_and_leaving_the_block_restore_the_previous_state() -> None:
    x = closes()
    with sharing():
        outer = Window(16).update(x)[0]
        with sharing():
            inner = Window(16).update(x)[0]
            assert Window(16).update(x)[0] is inner
            assert not inner.flags.writeable
            assert_same_bits(inner, outer)
        assert Window(16).update(x)[0] is outer  # the outer block's results are back
        with pytest.raises(RuntimeError, match="left"):
            fail_inside_a_block(x)
        assert Window(16).update(x)[0] is outer
    after = Window(16).update(x)[0]
    assert after is not outer and after is not inner and after.flags.writeable
    assert Window(16).update(x)[0] is not after
    with pytest.raises(RuntimeError, match="left"):
        fail_inside_a_block(x)
    assert Window(16).update(x)[0].flags.writeable
