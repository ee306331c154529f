"""Overfitting measures: the deflated Sharpe ratio and the probability of backtest overfitting, checked against
figures worked out by hand from the documented formulas and against constructed studies whose answer is known."""

from __future__ import annotations

import itertools
import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from pipeline.domain import DataError
from pipeline.research.overfitting import (
    MAX_COMBINATIONS,
    DeflatedSharpe,
    Overfitting,
    _combinations,
    _pooled_sharpe,
    block_bounds,
    deflated_sharpe,
    probability_of_overfitting,
    return_moments,
    verdict,
)

pytestmark = pytest.mark.filterwarnings("error")

PHI = NormalDist()
GAMMA = 0.5772156649015329


def block_sums(returns: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-block sums, sums of squares and bar counts of a (trials x bars) returns matrix, built bar by bar."""
    bounds = block_bounds(returns.shape[1], blocks)
    sums = np.zeros((returns.shape[0], blocks))
    squares = np.zeros((returns.shape[0], blocks))
    for s in range(blocks):
        chunk = returns[:, bounds[s] : bounds[s + 1]]
        sums[:, s] = chunk.sum(axis=1)
        squares[:, s] = (chunk**2).sum(axis=1)
    return sums, squares, np.diff(bounds)


def direct_sharpe(returns: np.ndarray) -> float:
    stdev = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / stdev if stdev > 0 else 0.0


# --- deflated Sharpe ratio -----------------------------------------------------------------------------------


def test_single_trial_is_the_probabilistic_sharpe_ratio() -> None:
    # PSR = Phi(SR * sqrt(T - 1) / sqrt(1 - skew*SR + (kurt - 1)/4 * SR^2)) with SR0 = 0
    # = Phi(0.1 * sqrt(249) / sqrt(1 + 0.05 + 0.0075)) = Phi(1.534454...)
    expected = PHI.cdf(0.1 * math.sqrt(249) / math.sqrt(1 + 0.5 * 0.1 + 3 / 4 * 0.01))
    result = deflated_sharpe(0.1, 250, -0.5, 4.0, np.array([0.1]))
    assert result.probability == pytest.approx(expected, rel=1e-12)
    assert result.probability == pytest.approx(0.93754, abs=1e-5)
    assert result.expected_max_sharpe == 0.0
    assert result.trials == 1
    assert result.sharpe == 0.1


def test_nan_trials_are_left_out() -> None:
    alone = deflated_sharpe(0.1, 250, 0.0, 3.0, np.array([0.1]))
    with_gaps = deflated_sharpe(0.1, 250, 0.0, 3.0, np.array([np.nan, 0.1, np.nan]))
    assert with_gaps == alone


def test_known_case_worked_by_hand() -> None:
    trials = np.array([0.02, 0.05, 0.08, 0.11, 0.14])
    # deviations from the mean 0.08: -0.06 -0.03 0 0.03 0.06; squares sum to 0.009; / (5 - 1) = 0.00225
    sd = math.sqrt(0.00225)
    sr0 = sd * ((1 - GAMMA) * PHI.inv_cdf(1 - 1 / 5) + GAMMA * PHI.inv_cdf(1 - 1 / (5 * math.e)))
    denominator = 1 - (-1.0) * 0.14 + (6.0 - 1) / 4 * 0.14**2
    expected = PHI.cdf((0.14 - sr0) * math.sqrt(500 - 1) / math.sqrt(denominator))
    result = deflated_sharpe(0.14, 500, -1.0, 6.0, trials)
    assert result.expected_max_sharpe == pytest.approx(sr0, rel=1e-12)
    assert result.probability == pytest.approx(expected, rel=1e-12)
    assert result.trials == 5


def test_published_example_of_bailey_and_lopez_de_prado() -> None:
    # The paper's example: 100 trials whose annualised Sharpe ratios have variance 1/2, a best annualised Sharpe
    # of 2.5 over 1250 daily returns, skew -3, kurtosis 10 → DSR 0.9004. Per day: SR = 2.5 / sqrt(250) and the
    # variance 0.5 / 250.
    draws = np.random.default_rng(1).normal(size=100)
    trials = (draws - draws.mean()) / draws.std(ddof=1) * math.sqrt(0.5 / 250)
    result = deflated_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, trials)
    assert result.probability == pytest.approx(0.9004, abs=5e-5)
    assert result.expected_max_sharpe == pytest.approx(0.1132, abs=5e-5)  # SR0 per day, about 1.79 a year


def test_more_trials_deflate_more() -> None:
    probabilities = [
        deflated_sharpe(0.12, 1000, 0.0, 3.0, np.linspace(-0.05, 0.05, n)).probability for n in (1, 2, 10, 100, 1000)
    ]
    assert all(a > b for a, b in itertools.pairwise(probabilities))


def test_wider_spread_of_trials_deflates_more() -> None:
    probabilities = [
        deflated_sharpe(0.12, 1000, 0.0, 3.0, np.linspace(-w, w, 50)).probability for w in (0.0, 0.01, 0.05, 0.1)
    ]
    assert probabilities[0] == pytest.approx(PHI.cdf(0.12 * math.sqrt(999) / math.sqrt(1 + 0.5 * 0.12**2)))
    assert all(a > b for a, b in itertools.pairwise(probabilities))


def test_deflated_sharpe_as_dict_is_json_ready() -> None:
    result = deflated_sharpe(np.float64(0.1), 250, 0.0, 3.0, np.array([0.1, 0.05]))
    data = result.as_dict()
    assert set(data) == {"probability", "expected_max_sharpe", "trials", "sharpe"}
    assert [type(v) for v in data.values()] == [float, float, int, float]
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_returns": 1}, "n_returns"),
        ({"n_returns": 10.0}, "n_returns"),
        ({"n_returns": True}, "n_returns"),
        ({"sharpe": math.nan}, "sharpe"),
        ({"sharpe": "high"}, "sharpe"),
        ({"skew": math.inf}, "skew"),
        ({"kurtosis": math.nan}, "kurtosis"),
        ({"kurtosis": 0.5}, "kurtosis"),
        ({"trial_sharpes": np.array([np.nan, np.nan])}, "trial_sharpes"),
        ({"trial_sharpes": np.array([])}, "trial_sharpes"),
        ({"trial_sharpes": np.array([0.1, np.inf])}, "trial_sharpes"),
        ({"trial_sharpes": np.array([[0.1, 0.2]])}, "trial_sharpes"),
        ({"trial_sharpes": ["a", "b"]}, "trial_sharpes"),
        ({"sharpe": 1.0, "skew": 3.0, "kurtosis": 1.0}, "not positive"),
    ],
)
def test_deflated_sharpe_refusals(kwargs: dict[str, object], name: str) -> None:
    args: dict[str, object] = {
        "sharpe": 0.1, "n_returns": 250, "skew": 0.0, "kurtosis": 3.0, "trial_sharpes": np.array([0.1, 0.05])
    }
    args.update(kwargs)
    with pytest.raises(DataError, match=name):
        deflated_sharpe(**args)  # type: ignore[arg-type]


def test_return_moments_match_numpy() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.015, -0.005, 0.04, -0.03])
    sharpe, skew, kurtosis = return_moments(r)
    d = r - r.mean()
    assert sharpe == pytest.approx(r.mean() / r.std(ddof=1), rel=1e-12)
    assert skew == pytest.approx(np.mean(d**3) / np.mean(d**2) ** 1.5, rel=1e-12)
    assert kurtosis == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2, rel=1e-12)


def test_return_moments_of_a_symmetric_two_point_series() -> None:
    # +-1 alternating: mean 0, skew 0, kurtosis m4 / m2^2 = 1 / 1 = 1
    assert return_moments(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx((0.0, 0.0, 1.0))


def test_return_moments_of_a_constant_series() -> None:
    assert return_moments(np.full(10, 0.01)) == (0.0, 0.0, 3.0)


@pytest.mark.parametrize("returns", [np.array([0.01]), np.array([0.01, np.nan]), np.zeros((2, 2))])
def test_return_moments_refusals(returns: np.ndarray) -> None:
    with pytest.raises(DataError, match="returns"):
        return_moments(returns)


# --- blocks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_bars", "blocks"), [(10, 2), (101, 4), (1000, 16), (33, 16), (17, 8)])
def test_block_bounds_cover_every_bar_in_near_equal_blocks(n_bars: int, blocks: int) -> None:
    bounds = block_bounds(n_bars, blocks)
    sizes = np.diff(bounds)
    assert bounds[0] == 0
    assert bounds[-1] == n_bars
    assert len(bounds) == blocks + 1
    assert sizes.sum() == n_bars
    assert sizes.max() - sizes.min() <= 1
    assert sizes.min() >= 2


def test_block_bounds_by_hand() -> None:
    assert block_bounds(10, 4).tolist() == [0, 2, 5, 7, 10]


@pytest.mark.parametrize(
    ("n_bars", "blocks", "name"), [(7, 4, "n_bars"), (10, 0, "blocks"), (10.0, 2, "n_bars"), (10, 2.0, "blocks")]
)
def test_block_bounds_refusals(n_bars: int, blocks: int, name: str) -> None:
    with pytest.raises(DataError, match=name):
        block_bounds(n_bars, blocks)


# --- probability of backtest overfitting ---------------------------------------------------------------------


def test_pooled_sums_give_the_sharpe_of_the_concatenated_returns() -> None:
    rng = np.random.default_rng(7)
    returns = rng.normal(0.001, 0.02, (3, 600))
    sums, squares, counts = block_sums(returns, 6)
    bounds = block_bounds(600, 6)
    chosen = [0, 3, 4]
    weights = np.zeros(6)
    weights[chosen] = 1.0
    pooled = _pooled_sharpe(sums @ weights, squares @ weights, np.full(3, float(counts @ weights)))
    for trial in range(3):
        joined = np.concatenate([returns[trial, bounds[s] : bounds[s + 1]] for s in chosen])
        assert pooled[trial] == pytest.approx(direct_sharpe(joined), rel=1e-9)


def test_pooled_sharpe_of_a_flat_trial_is_zero() -> None:
    sums, squares, counts = block_sums(np.full((1, 40), 0.003), 2)
    assert _pooled_sharpe(sums[:, 0], squares[:, 0], np.array([float(counts[0])])).tolist() == [0.0]


def test_two_blocks_worked_by_hand() -> None:
    # S = 2: combination A has block 0 in-sample, combination B has block 1. Sharpe (mean / sd) per block:
    returns = np.array(
        [
            [0.01, 0.03, 0.02, -0.02, 0.0, -0.01],  # block 0: .02/.01 = 2;  block 1: -.01/.01 = -1
            [0.0, 0.02, 0.04, 0.01, 0.03, 0.05],  # block 0: .02/.02 = 1;  block 1: .03/.02 = 1.5
            [0.0, 0.02, 0.04, 0.02, 0.05, 0.08],  # block 0: .02/.02 = 1;  block 1: .05/.03 = 5/3
        ]
    )
    sums, squares, counts = block_sums(returns, 2)
    result = probability_of_overfitting(sums, squares, counts)
    # A: IS (2, 1, 1) → trial 0; OOS (-1, 1.5, 5/3): rank 1 of 3 → omega 1/4 → logit ln(1/3)
    # B: IS (-1, 1.5, 5/3) → trial 2; OOS (2, 1, 1): tied with trial 1 for ranks 1-2 → 1.5 → omega 0.375
    assert result.combinations == 2
    assert result.logits.tolist() == pytest.approx([math.log(1 / 3), math.log(0.375 / 0.625)])
    assert result.probability == 1.0
    assert result.median_logit == pytest.approx((math.log(1 / 3) + math.log(0.6)) / 2)
    # the line through (IS, OOS) = (2, -1) and (5/3, 1)
    assert result.degradation_slope == pytest.approx((1 - -1) / (5 / 3 - 2))
    assert (result.trials, result.blocks, result.sampled) == (3, 2, False)


def test_in_sample_tie_goes_to_the_lowest_index() -> None:
    # trials 0 and 1 are the same in block 0; out of sample (block 1) trial 0 is the worst, trial 1 the best
    returns = np.array(
        [
            [0.01, 0.03, 0.02, -0.02, 0.0, -0.01],
            [0.01, 0.03, 0.02, 0.03, 0.04, 0.05],
            [0.0, 0.01, 0.02, 0.0, 0.01, 0.02],
        ]
    )
    result = probability_of_overfitting(*block_sums(returns, 2))
    assert result.logits[0] == pytest.approx(math.log(1 / 3))  # trial 0 picked: rank 1 → omega 1/4


def test_identical_trials_tie_at_the_middle_rank() -> None:
    returns = np.tile(np.array([0.01, 0.03, 0.02, -0.02, 0.0, -0.01, 0.01, 0.02]), (4, 1))
    result = probability_of_overfitting(*block_sums(returns, 4))
    # every OOS Sharpe ties: rank (4 + 1) / 2 → omega 1/2 → logit 0, which counts as overfit
    assert result.logits.tolist() == [0.0] * 6
    assert result.probability == 1.0
    assert result.degradation_slope is not None


def test_pure_noise_is_a_coin_flip() -> None:
    # one study's PBO on noise spreads widely (about 0.25-0.75 from seed to seed); seed 0 gives 0.44
    returns = np.random.default_rng(0).normal(0.0, 0.01, (100, 1600))
    result = probability_of_overfitting(*block_sums(returns, 10))
    assert result.combinations == math.comb(10, 5)
    assert 0.3 < result.probability < 0.7


def test_pure_noise_averages_one_half_over_many_studies() -> None:
    results = [
        probability_of_overfitting(*block_sums(np.random.default_rng(seed).normal(0.0, 0.01, (100, 1600)), 10))
        for seed in range(20)
    ]
    assert 0.4 < float(np.mean([r.probability for r in results])) < 0.6


def test_a_trial_better_in_every_block_is_not_overfit() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.01, (30, 1200))
    returns[0] += 0.01  # a Sharpe near 1 per bar against noise near 0
    sums, squares, counts = block_sums(returns, 8)
    block_sharpe = (sums / counts) / np.sqrt((squares - sums**2 / counts) / (counts - 1))
    assert (np.argmax(block_sharpe, axis=0) == 0).all()  # the construction holds: trial 0 leads every block
    result = probability_of_overfitting(sums, squares, counts)
    assert result.probability < 0.1
    assert result.logits.tolist() == pytest.approx([math.log(30)] * math.comb(8, 4))  # always ranked 30 of 30


def test_in_sample_winner_always_out_of_sample_loser() -> None:
    # one trial per choice of 3 good blocks out of 6: good blocks gain, the others lose. Whatever blocks are
    # in-sample, the trial good in exactly those wins in-sample and is bad in every out-of-sample block.
    blocks, bars = 6, 50
    wiggle = np.random.default_rng(5).normal(0.0, 0.01, bars)
    wiggle -= wiggle.mean()
    patterns = list(itertools.combinations(range(blocks), blocks // 2))
    returns = np.empty((len(patterns), blocks * bars))
    for trial, good in enumerate(patterns):
        for s in range(blocks):
            returns[trial, s * bars : (s + 1) * bars] = (0.005 if s in good else -0.005) + wiggle
    result = probability_of_overfitting(*block_sums(returns, blocks))
    assert result.probability > 0.9
    assert result.logits.tolist() == pytest.approx([math.log(1 / len(patterns))] * len(patterns))
    assert result.degradation_slope is None  # every in-sample winner has the same Sharpe


@pytest.mark.parametrize("blocks", [2, 4, 6, 8, 16])
def test_every_combination_is_used_up_to_the_limit(blocks: int) -> None:
    returns = np.random.default_rng(blocks).normal(0.0, 0.01, (3, blocks * 4))
    result = probability_of_overfitting(*block_sums(returns, blocks))
    assert result.combinations == math.comb(blocks, blocks // 2)
    assert result.logits.shape == (result.combinations,)
    assert not result.sampled


def test_sampling_above_the_limit_is_deterministic() -> None:
    returns = np.random.default_rng(11).normal(0.0, 0.01, (4, 18 * 5))
    sums, squares, counts = block_sums(returns, 18)
    first = probability_of_overfitting(sums, squares, counts)
    second = probability_of_overfitting(sums, squares, counts)
    assert math.comb(18, 9) > MAX_COMBINATIONS
    assert first.sampled
    assert first.combinations == MAX_COMBINATIONS
    assert np.array_equal(first.logits, second.logits)
    assert first.as_dict() == second.as_dict()


def test_sampled_combinations_are_distinct_halves() -> None:
    masks, sampled = _combinations(18)
    assert sampled
    assert masks.shape == (MAX_COMBINATIONS, 18)
    assert (masks.sum(axis=1) == 9).all()
    assert len(np.unique(masks, axis=0)) == MAX_COMBINATIONS


def test_blocks_merge_adjacent_columns() -> None:
    returns = np.random.default_rng(9).normal(0.0, 0.01, (5, 240))
    merged = probability_of_overfitting(*block_sums(returns, 12), blocks=6)
    direct = probability_of_overfitting(*block_sums(returns, 6))
    assert merged.blocks == 6
    assert merged.combinations == 20
    assert merged.logits.tolist() == pytest.approx(direct.logits.tolist())


def test_overfitting_as_dict_is_json_ready() -> None:
    returns = np.random.default_rng(4).normal(0.0, 0.01, (6, 80))
    result = probability_of_overfitting(*block_sums(returns, 4))
    data = result.as_dict()
    assert "logits" not in data
    assert json.loads(json.dumps(data)) == data
    assert data["logit_q50"] == pytest.approx(result.median_logit)
    quantiles = np.array([data[f"logit_q{pct:02d}"] for pct in (5, 25, 50, 75, 95)], dtype=np.float64)
    assert (np.diff(quantiles) >= 0).all()
    assert all(type(v) in (float, int, bool) or v is None for v in data.values())
    assert not result.logits.flags.writeable


def _valid() -> dict[str, object]:
    return {"sums": np.zeros((3, 4)), "squares": np.ones((3, 4)), "counts": np.full(4, 5)}


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"sums": np.zeros((1, 4)), "squares": np.ones((1, 4))}, "sums"),
        ({"sums": np.zeros((3, 3)), "squares": np.ones((3, 3)), "counts": np.full(3, 5)}, "blocks"),
        ({"sums": np.zeros((3, 0)), "squares": np.ones((3, 0)), "counts": np.zeros(0)}, "blocks"),
        ({"blocks": 1}, "blocks"),
        ({"blocks": 3}, "blocks"),
        ({"blocks": 8}, "blocks"),
        ({"blocks": 2.0}, "blocks"),
        ({"squares": np.ones((3, 6))}, "squares"),
        ({"squares": np.ones((2, 4))}, "squares"),
        ({"counts": np.full(5, 5)}, "counts"),
        ({"counts": np.array([5, 5, 1, 5])}, "counts"),
        ({"counts": np.array([5, 5, 2.5, 5])}, "counts"),
        ({"counts": np.array([5, 5, np.nan, 5])}, "counts"),
        ({"sums": np.array([[0.0, np.nan, 0, 0]] * 3)}, "sums"),
        ({"squares": np.array([[1.0, np.inf, 1, 1]] * 3)}, "squares"),
        ({"squares": -np.ones((3, 4))}, "squares"),
        ({"sums": np.zeros(4)}, "sums"),
        ({"sums": [["a"] * 4] * 3}, "sums"),
    ],
)
def test_overfitting_refusals(changes: dict[str, object], name: str) -> None:
    args = _valid()
    args.update(changes)
    with pytest.raises(DataError, match=name):
        probability_of_overfitting(**args)  # type: ignore[arg-type]


# --- verdict -------------------------------------------------------------------------------------------------


def _dsr(probability: float, trials: int = 1000) -> DeflatedSharpe:
    return DeflatedSharpe(probability=probability, expected_max_sharpe=0.1, trials=trials, sharpe=0.15)


def _pbo(probability: float, combinations: int = 12870, sampled: bool = False) -> Overfitting:
    logits = np.zeros(combinations)
    return Overfitting(probability, combinations, sampled, logits, 0.0, None, 10, 16)


@pytest.mark.parametrize(
    ("probability", "phrase"),
    [
        (0.97, "likely genuine: the deflated Sharpe ratio is 0.97 after 1,000 trials."),
        (0.95, "likely genuine"),
        (0.9499, "not distinguishable from luck at 95 %: the deflated Sharpe ratio is 0.94 after"),
        (0.5, "not distinguishable from luck"),
        (0.4999, "likely luck"),
        (0.02, "likely luck: the deflated Sharpe ratio is 0.02"),
    ],
)
def test_verdict_on_the_deflated_sharpe(probability: float, phrase: str) -> None:
    text = verdict(_dsr(probability), None)
    assert text.startswith("The best trial's Sharpe is ")
    assert phrase in text


def test_verdict_counts_one_trial_in_the_singular() -> None:
    assert verdict(_dsr(0.99, trials=1), None).endswith("after 1 trial.")


@pytest.mark.parametrize(
    ("probability", "phrase"),
    [
        (0.05, "Low risk of overfitting: the probability of backtest overfitting is 0.05 over 12,870"),
        (0.1, "Low risk"),
        (0.1001, "Moderate risk of overfitting: the probability of backtest overfitting is 0.11"),
        (0.5, "Moderate risk"),
        (0.72, "Likely overfit: the probability of backtest overfitting is 0.72"),
    ],
)
def test_verdict_on_the_probability_of_overfitting(probability: float, phrase: str) -> None:
    assert phrase in verdict(None, _pbo(probability))


def test_verdict_says_when_it_is_likely_overfit() -> None:
    text = verdict(None, _pbo(0.8, combinations=20000, sampled=True))
    assert text == (
        "Likely overfit: the probability of backtest overfitting is 0.80 over 20,000 sampled train/test splits, "
        "so the in-sample winner usually underperforms out of sample."
    )


def test_verdict_with_both_measures_gives_two_sentences() -> None:
    text = verdict(_dsr(0.97), _pbo(0.05))
    assert text.startswith("The best trial's Sharpe is likely genuine")
    assert text.endswith("over 12,870 train/test splits.")
    assert text.count(". ") == 1


def test_verdict_with_neither_measure() -> None:
    assert verdict(None, None) == "No overfitting measure was computed."
