"""Streaming decisions: every feature column and every shipped strategy, computed bar by bar (and in random
chunks) on real data, equals the batch computation bit for bit; a stream saved with ``state()`` mid-way,
JSON round-tripped and restored continues identically; the state (and so the work per bar) does not grow with
the bars seen. The step primitives are checked bit for bit against pandas and against the documented sums."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import AssetClass, DataError
from pipeline.features.build import FeatureSpec, FeatureStream, build_features
from pipeline.features.streaming import Ema, Lag, Rsi, Wilder, Window, smoothing_alpha
from pipeline.strategies import REGISTRY, Targets
from pipeline.strategies.sma_cross import SmaCross
from tests.conftest import shared_file

BTC_H1 = "binance_BTC-USDT_1h.parquet"
BTC_M1 = "binance_BTC-USDT_1m.parquet"
AAPL_D1 = "quandlwiki_AAPL_1d.parquet"
SPEC = FeatureSpec()
SEED = 20_251_206

# (file, first row, last row, asset class): 1h bars with two gaps and a zero-volume bar; 1m bars holding a 72-bar
# stretch of equal closes and zero volume; 1m bars holding ten equal closes whose plain mean is not the close
# (row 1,052: only the constant-window rule gives exactly the close); daily stock bars (the ``gap`` column).
SERIES = {
    "btc_1h": (BTC_H1, 28_000, 29_500, AssetClass.CRYPTO),
    "btc_1m": (BTC_M1, 295_000, 297_500, AssetClass.CRYPTO),
    "btc_1m_flat": (BTC_M1, 517_000, 518_600, AssetClass.CRYPTO),
    "aapl_1d": (AAPL_D1, 0, 1_500, AssetClass.STOCK),
}
FLAT_ROW = 1_052
STRATEGIES: list[tuple[str, dict[str, str]]] = [(name, {}) for name in REGISTRY.names()] + [
    ("hybrid", {"base": "sma_cross", "fast": "5", "slow": "20"}),
    ("hybrid", {"base": "rsi_reversion", "threshold": "0.3"}),
    ("hybrid", {"base": "buy_and_hold", "threshold": "0.5"}),
]
STRATEGY_IDS = [f"{name}{params or ''}" for name, params in STRATEGIES]


def real_bars(key: str) -> tuple[pd.DataFrame, AssetClass]:
    name, first, last, asset_class = SERIES[key]
    return pd.read_parquet(shared_file(name)).iloc[first:last].reset_index(drop=True), asset_class


def with_model_score(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars plus a causal ``model_score`` (the rank of the latest return among the last 50; NaN at first)."""
    return bars.assign(model_score=bars["close"].pct_change().rolling(50).rank(pct=True))


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """Equal bit for bit: NaN at the same places, every other value with the same 64 bits (signed zeros too)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    filled = ~np.isnan(want)
    np.testing.assert_array_equal(got[filled].view(np.int64), want[filled].view(np.int64), err_msg=what)


def random_chunks(n: int, seed: int, largest: int) -> list[slice]:
    """Consecutive slices covering ``0..n`` with random sizes from 0 to ``largest`` (empty chunks too)."""
    rng = np.random.default_rng(seed)
    chunks: list[slice] = []
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(0, largest + 1)))
        chunks.append(slice(start, stop))
        start = stop
    return chunks


def round_trip(state: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(state))
    return loaded


def shape_of(state: object) -> object:
    """A state with every string replaced by its length and every number by its type: what must not grow."""
    if isinstance(state, dict):
        return {key: shape_of(value) for key, value in state.items()}
    if isinstance(state, list):
        return [shape_of(value) for value in state]
    if isinstance(state, str):
        return len(state)
    return type(state).__name__


def floats_held(state: object) -> int:
    """How many float64 values a state holds (its base64 strings; names and hashes aside)."""
    if isinstance(state, dict):
        return sum(floats_held(value) for key, value in state.items() if key not in ("spec", "asset_class"))
    if isinstance(state, str):
        return len(state) * 3 // 4 // 8
    return 0


# ------------------------------------------------------------------------------------------------ primitives
@pytest.fixture(scope="module")
def minute_closes() -> np.ndarray:
    """Every close of the real 1m file: 653,623 values, 14,255 of them equal to the one before."""
    return pd.read_parquet(shared_file(BTC_M1), columns=["close"])["close"].to_numpy(dtype=np.float64)


def chunked(update: Callable[[np.ndarray], np.ndarray], x: np.ndarray, largest: int) -> np.ndarray:
    return np.concatenate([update(x[chunk]) for chunk in random_chunks(len(x), SEED, largest)])


@pytest.mark.parametrize("span", [9, 12, 26, 50, 200])
def test_ema_is_pandas_ewm_bit_for_bit(span: int, minute_closes: np.ndarray) -> None:
    want = pd.Series(minute_closes).ewm(span=span, adjust=False).mean().to_numpy()
    assert_same_bits(Ema.of_span(span).update(minute_closes), want, "one call")
    assert_same_bits(chunked(Ema.of_span(span).update, minute_closes, 5_000), want, "chunks")
    one = Ema.of_span(span)
    assert_same_bits(np.concatenate([one.update(minute_closes[i : i + 1]) for i in range(3_000)]), want[:3_000])


def test_ema_skips_missing_values_as_pandas_does(minute_closes: np.ndarray) -> None:
    x = minute_closes[:20_000].copy()
    x[:14] = np.nan
    x[[100, 101, 102, 5_000, 19_999]] = np.nan
    want = pd.Series(x).ewm(alpha=1 / 14, adjust=False).mean().to_numpy()
    assert_same_bits(Ema(smoothing_alpha(1 / 14)).update(x), want)
    assert_same_bits(chunked(Ema(smoothing_alpha(1 / 14)).update, x, 50), want)


@pytest.mark.parametrize("period", [1, 2, 14, 30, 200])
def test_wilder_is_the_seeded_smoothing_bit_for_bit(period: int) -> None:
    """Reference: the mean of ``x[1..period]`` at row ``period``, then pandas ``ewm(alpha=1/period)``."""
    bars, _ = real_bars("btc_1h")
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    previous = np.r_[np.nan, close[:-1]]
    true_range = np.fmax(high - low, np.fmax(np.abs(high - previous), np.abs(low - previous)))
    seeded = np.full(len(true_range), np.nan)
    seeded[period] = true_range[1 : period + 1].mean()
    seeded[period + 1 :] = true_range[period + 1 :]
    want = pd.Series(seeded).ewm(alpha=1.0 / period, adjust=False).mean().to_numpy()
    assert_same_bits(Wilder(period).update(true_range), want, "one call")
    assert_same_bits(chunked(Wilder(period).update, true_range, 7), want, "chunks")


def exact_moments(x: np.ndarray, window: int, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented sums, vectorised over rows: ``x[i], x[i-1], ..., x[i-window+1]`` from 0, then the squared
    deviations in the same order; exactly the value and 0 where the window's values are all equal."""
    n = len(x)
    ends = slice(window - 1, n)
    total = np.zeros(n - window + 1)
    for j in range(window):
        total = total + x[window - 1 - j : n - j]
    constant = np.ones(n - window + 1, dtype=bool)
    for j in range(1, window):
        constant &= x[window - 1 - j : n - j] == x[ends]
    mean = np.where(constant, x[ends], total / window)
    squares = np.zeros(n - window + 1)
    for j in range(window):
        deviation = x[window - 1 - j : n - j] - mean
        squares = squares + deviation * deviation
    std = np.where(constant, 0.0, np.sqrt(squares / max(window - ddof, 1)))
    head = np.full(window - 1, np.nan)
    return np.r_[head, mean], np.r_[head, std]


@pytest.mark.parametrize(("window", "ddof"), [(1, 0), (2, 1), (10, 0), (20, 0), (30, 1), (50, 1), (200, 0)])
def test_window_moments_are_the_documented_sums(window: int, ddof: int) -> None:
    bars, _ = real_bars("btc_1m")
    for x in (bars["close"].to_numpy(), np.log1p(bars["volume"].to_numpy())):
        mean, std = exact_moments(x, window, ddof)
        got_mean, got_std = Window(window, ddof, with_std=True).update(x)
        assert_same_bits(got_mean, mean, "mean")
        assert_same_bits(got_std, std, "std")
        stream = Window(window, ddof, with_std=True)
        parts = [stream.update(x[chunk]) for chunk in random_chunks(len(x), SEED, 600)]
        assert_same_bits(np.concatenate([m for m, _ in parts]), got_mean, "chunked mean")
        assert_same_bits(np.concatenate([s for _, s in parts]), got_std, "chunked std")


def test_the_constant_window_rule_holds_across_updates() -> None:
    """Ten equal real closes whose plain mean is off by one unit in the last place: the window must know, bar by
    bar, that the ten values are equal (the run it carries), to give exactly the close."""
    bars, _ = real_bars("btc_1m_flat")
    x = bars["close"].to_numpy()
    window = x[FLAT_ROW - 9 : FLAT_ROW + 1]
    assert (window == x[FLAT_ROW]).all()
    assert sum(window.tolist()) / 10 != x[FLAT_ROW]
    batch, _ = Window(10).update(x)
    assert batch[FLAT_ROW] == x[FLAT_ROW]
    stream = Window(10)
    assert_same_bits(np.concatenate([stream.update(x[i : i + 1])[0] for i in range(len(x))]), batch)
    restored = Window(10)
    restored.update(x[: FLAT_ROW - 3])
    again = Window(10)
    again.restore(round_trip(restored.state()))
    assert_same_bits(again.update(x[FLAT_ROW - 3 :])[0], batch[FLAT_ROW - 3 :])


def test_primitive_states_round_trip_and_stay_bounded(minute_closes: np.ndarray) -> None:
    x = minute_closes[:4_000]
    makers: list[Callable[[], Ema | Wilder | Window | Lag | Rsi]] = [
        lambda: Ema.of_span(26), lambda: Wilder(14), lambda: Window(50, 1, with_std=True), lambda: Lag(48),
        lambda: Rsi(14),
    ]
    for make in makers:
        whole = make()
        want = whole.update(x)
        want = want[1] if isinstance(want, tuple) else want
        shapes = []
        for cut in (0, 1, 13, 14, 15, 49, 50, 51, 1_000, 3_999):
            first = make()
            first.update(x[:cut])
            shapes.append(shape_of(first.state()))
            second = make()
            second.restore(round_trip(first.state()))
            rest = second.update(x[cut:])
            rest = rest[1] if isinstance(rest, tuple) else rest
            assert_same_bits(rest, want[cut:], f"{type(first).__name__} from {cut}")
        assert all(shape == shapes[0] for shape in shapes), type(whole).__name__


# ---------------------------------------------------------------------------------------------- the features
@pytest.fixture(scope="module", params=list(SERIES))
def series(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, AssetClass, np.ndarray]:
    """Real bars, their asset class and the batch features (``build_features``) with the warm-up rows as NaN."""
    bars, asset_class = real_bars(request.param)
    batch = build_features(bars, SPEC, asset_class)
    assert list(batch.columns[1:]) == SPEC.columns(asset_class)  # every shipped feature column
    full = np.full((len(bars), len(SPEC.columns(asset_class))), np.nan)
    full[SPEC.warmup :] = batch.drop(columns="timestamp").to_numpy()
    return bars, asset_class, full


def test_features_bar_by_bar_equal_the_batch(series: tuple[pd.DataFrame, AssetClass, np.ndarray]) -> None:
    bars, asset_class, batch = series
    stream = FeatureStream(SPEC, asset_class)
    rows = [stream.update(bars.iloc[i : i + 1]) for i in range(len(bars))]
    assert stream.bars_seen == len(bars)
    assert all(row.shape == (1, len(stream.columns)) and row.dtype == np.float64 for row in rows)
    got = np.vstack(rows)
    assert np.isnan(got[: SPEC.warmup]).all()
    for j, name in enumerate(stream.columns):
        assert_same_bits(got[:, j], batch[:, j], name)


def test_features_in_random_chunks_equal_the_batch(series: tuple[pd.DataFrame, AssetClass, np.ndarray]) -> None:
    bars, asset_class, batch = series
    for largest in (3, 40, 700):
        stream = FeatureStream(SPEC, asset_class)
        chunks = random_chunks(len(bars), SEED + largest, largest)
        got = np.vstack([stream.update(bars.iloc[chunk]) for chunk in chunks])
        for j, name in enumerate(stream.columns):
            assert_same_bits(got[:, j], batch[:, j], f"{name} in chunks of up to {largest}")


@pytest.mark.parametrize("cut", [1, 2, 14, 15, 120, 199, 200, 201, 777])
def test_a_restored_feature_stream_continues_exactly(
    cut: int, series: tuple[pd.DataFrame, AssetClass, np.ndarray]
) -> None:
    bars, asset_class, batch = series
    first = FeatureStream(SPEC, asset_class)
    before = first.update(bars.iloc[:cut])
    saved = round_trip(first.state())
    restored = FeatureStream.from_state(SPEC, asset_class, saved)
    assert restored.bars_seen == cut
    replaced = FeatureStream(SPEC, asset_class)
    replaced.restore(saved)
    one_by_one = [restored.update(bars.iloc[i : i + 1]) for i in range(cut, min(cut + 30, len(bars)))]
    rest = restored.update(bars.iloc[cut + len(one_by_one) :])
    got = np.vstack([before, *one_by_one, rest])
    in_one = np.vstack([before, replaced.update(bars.iloc[cut:])])
    for j, name in enumerate(first.columns):
        assert_same_bits(got[:, j], batch[:, j], f"{name} restored after {cut} bars")
        assert_same_bits(in_one[:, j], batch[:, j], f"{name} restored after {cut} bars, one update")


def test_feature_stream_state_does_not_grow_with_the_bars_seen(
    series: tuple[pd.DataFrame, AssetClass, np.ndarray],
) -> None:
    bars, asset_class, _ = series
    stream = FeatureStream(SPEC, asset_class)
    shapes = []
    for first, last in ((0, 250), (250, 400), (400, len(bars))):
        stream.update(bars.iloc[first:last])
        shapes.append(shape_of(stream.state()))
    assert shapes[0] == shapes[1] == shapes[2]
    # What it holds: the last values of each window and lag, seed buffers and a few recursion values.
    bound = sum(SPEC.ma_windows) + SPEC.bollinger[0] + sum(SPEC.vol_windows) + SPEC.volume_window
    bound += sum(SPEC.return_horizons) + 2 * SPEC.rsi_period + SPEC.atr_period + 40
    assert floats_held(stream.state()) <= bound


def test_feature_stream_refuses_bars_that_do_not_continue_and_keeps_its_state() -> None:
    bars, asset_class = real_bars("btc_1h")
    stream = FeatureStream(SPEC, asset_class)
    stream.update(bars.iloc[:300])
    saved = stream.state()
    with pytest.raises(DataError, match=r"strictly increasing; row 0 .* not later than the last bar already seen"):
        stream.update(bars.iloc[299:310])
    with pytest.raises(DataError, match=r"'close' must be finite and positive; row 2 holds nan"):
        stream.update(bars.iloc[300:310].assign(close=[1.0, 2.0, np.nan, *[3.0] * 7]))
    with pytest.raises(DataError, match="lacks column"):
        stream.update(bars.iloc[300:310].drop(columns="volume"))
    assert stream.state() == saved
    with pytest.raises(DataError, match="not f5e9adfc56ac"):
        FeatureStream.from_state(SPEC, asset_class, FeatureStream(FeatureSpec(rsi_period=21), asset_class).state())
    with pytest.raises(DataError, match=r"\(stock\)"):
        FeatureStream.from_state(SPEC, AssetClass.STOCK, saved)
    broken = round_trip(saved)
    broken["parts"]["sma_200"]["tail"] = broken["parts"]["sma_50"]["tail"]
    with pytest.raises(DataError, match="window buffer holds 49 values, expected 199"):
        stream.restore(broken)
    assert stream.state() == saved


# -------------------------------------------------------------------------------------------- the strategies
@pytest.fixture(scope="module", params=list(SERIES))
def frame(request: pytest.FixtureRequest) -> pd.DataFrame:
    bars, _ = real_bars(request.param)
    return with_model_score(bars)


def assert_same_targets(got: Targets, want: Targets, what: str) -> None:
    assert got.reasons == want.reasons, what
    assert_same_bits(got.exposure, want.exposure, what)
    np.testing.assert_array_equal(got.reason, want.reason, err_msg=what)


def joined(parts: list[Targets]) -> Targets:
    return Targets(
        np.concatenate([p.exposure for p in parts]), np.concatenate([p.reason for p in parts]), parts[0].reasons
    )


def test_every_registered_strategy_is_covered() -> None:
    assert {name for name, _ in STRATEGIES} == set(REGISTRY.names())


@pytest.mark.parametrize(("name", "params"), STRATEGIES, ids=STRATEGY_IDS)
def test_decisions_bar_by_bar_and_in_chunks_equal_the_batch(
    name: str, params: dict[str, str], frame: pd.DataFrame
) -> None:
    strategy = REGISTRY.build(name, params)
    batch = strategy.targets(frame)
    assert np.isfinite(batch.exposure).any(), "the check must cover real decisions"
    stream = strategy.stream()
    one_by_one = joined([stream.update(frame.iloc[i : i + 1]) for i in range(len(frame))])
    assert_same_targets(one_by_one, batch, "bar by bar")
    for largest in (5, 300):
        stream = strategy.stream()
        parts = [stream.update(frame.iloc[chunk]) for chunk in random_chunks(len(frame), SEED + largest, largest)]
        assert_same_targets(joined(parts), batch, f"chunks of up to {largest}")


@pytest.mark.parametrize(("name", "params"), STRATEGIES, ids=STRATEGY_IDS)
def test_a_restored_decision_stream_continues_exactly(name: str, params: dict[str, str], frame: pd.DataFrame) -> None:
    strategy = REGISTRY.build(name, params)
    batch = strategy.targets(frame)
    shapes = []
    for cut in (1, 2, 14, 15, 16, 49, 50, 200, 201, 1_000, len(frame) - 1):
        first = strategy.stream()
        before = first.update(frame.iloc[:cut])
        shapes.append(shape_of(first.state()))
        second = strategy.stream()
        second.restore(round_trip(first.state()))
        next_bars = [second.update(frame.iloc[i : i + 1]) for i in range(cut, min(cut + 20, len(frame)))]
        rest = second.update(frame.iloc[cut + len(next_bars) :])
        assert_same_targets(joined([before, *next_bars, rest]), batch, f"restored after {cut} rows")
    assert all(shape == shapes[0] for shape in shapes), "the state must not grow with the rows seen"


def test_a_decision_state_of_another_strategy_is_refused() -> None:
    bars, _ = real_bars("btc_1h")
    stream = SmaCross(10, 30).stream()
    stream.update(bars.iloc[:100])
    saved = stream.state()
    with pytest.raises(DataError, match=r"belongs to .SmaCross\(fast=5, slow=20"):
        stream.restore(SmaCross(5, 20).stream().state())
    with pytest.raises(DataError, match="belongs to"):
        REGISTRY.build("hybrid").stream().restore(REGISTRY.build("golden_cross").stream().state())
    assert stream.state() == saved
