"""The one retry policy: what is transient, the waits (backoff, cap, jitter, Retry-After), when it gives up, and
its log lines, driven with an injected sleep, clock and random source (nothing waits)."""

from __future__ import annotations

import logging

import ccxt
import pandas as pd
import pytest
import requests
from alpaca.common.exceptions import APIError

from pipeline.clock import FixedClock
from pipeline.retry import RetriesExhausted, RetryPolicy, is_transient, retry_after, scrub

START = pd.Timestamp("2024-07-29T12:00:00Z")


class Venue:
    """A call that fails with the given errors, then answers ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _http_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return requests.HTTPError(f"{status} answer", response=response)


def _policy(waits: list[float], clock: FixedClock | None = None, **options: object) -> RetryPolicy:
    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if clock is not None:
            clock.set(clock.now() + pd.Timedelta(seconds=seconds))

    values: dict[str, object] = {"attempts": 5, "base_s": 1.0, "cap_s": 4.0, "jitter": 0.0}
    values.update(options)
    return RetryPolicy(sleep=sleep, clock=clock or FixedClock(START), **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [
    ccxt.RequestTimeout("t"), ccxt.RateLimitExceeded("r"), ccxt.DDoSProtection("418"), ccxt.ExchangeNotAvailable("5"),
    ccxt.NetworkError("n"), ccxt.OperationFailed("-1001"), requests.ConnectionError("dropped"),
    requests.Timeout("slow"), requests.exceptions.ChunkedEncodingError("cut"), _http_error(429), _http_error(503),
    TimeoutError(), ConnectionResetError(),
])
def test_transient_errors(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    ccxt.InsufficientFunds("f"), ccxt.InvalidOrder("i"), ccxt.BadSymbol("s"), ccxt.AuthenticationError("a"),
    _http_error(400), _http_error(403), ValueError("bad input"), KeyError("x"),
])
def test_refusals_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_alpaca_errors_by_status() -> None:
    def api_error(status: int) -> APIError:
        return APIError('{"code": 1, "message": "m"}', _http_error(status))

    assert [is_transient(api_error(s)) for s in (429, 500, 504, 403, 404, 422)] == [True] * 3 + [False] * 3


def test_backoff_doubles_up_to_the_cap_and_gives_up_after_the_attempts(caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float] = []
    venue = Venue(*[ccxt.ExchangeNotAvailable("down")] * 9)

    exhausted = r"bars failed after 5 attempts: ExchangeNotAvailable: down"
    with caplog.at_level(logging.WARNING, logger="pipeline.retry"), \
            pytest.raises(RetriesExhausted, match=exhausted) as raised:
        _policy(waits).call(venue, what="bars")

    assert waits == [1.0, 2.0, 4.0, 4.0]
    assert venue.calls == 5
    assert isinstance(raised.value.last, ccxt.ExchangeNotAvailable) and raised.value.attempts == 5
    assert len([r for r in caplog.records if r.name == "pipeline.retry"]) == 4  # one line per retry
    assert "bars failed (ExchangeNotAvailable: down); retry 1/4 in 1.00s" in caplog.text


def test_success_after_failures_returns_the_answer() -> None:
    waits: list[float] = []
    venue = Venue(requests.Timeout("slow"), _http_error(502))

    assert _policy(waits).call(venue, what="x") == "ok"
    assert venue.calls == 3 and waits == [1.0, 2.0]


def test_a_refusal_passes_through_at_once() -> None:
    waits: list[float] = []
    venue = Venue(ccxt.InsufficientFunds("no money"))

    with pytest.raises(ccxt.InsufficientFunds):
        _policy(waits).call(venue, what="order")
    assert venue.calls == 1 and waits == []


def test_jitter_shortens_each_wait_by_at_most_its_share() -> None:
    waits: list[float] = []
    shares = iter([0.0, 0.5, 1.0])
    policy = _policy(waits, jitter=0.2, rng=lambda: next(shares))

    policy.call(Venue(*[requests.Timeout()] * 3), what="x")

    assert waits == pytest.approx([1.0, 2.0 * 0.9, 4.0 * 0.8])


def test_retry_after_is_honoured_in_seconds_and_as_a_date_up_to_its_cap() -> None:
    waits: list[float] = []
    clock = FixedClock(START)
    date = (START + pd.Timedelta(seconds=7)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    venue = Venue(_http_error(429, {"Retry-After": "3"}), _http_error(429, {"Retry-After": date}),
                  _http_error(503, {"Retry-After": "9999"}))

    assert _policy(waits, clock, retry_after_cap_s=30.0).call(venue, what="x") == "ok"

    assert waits == [3.0, 7.0 - 3.0, 30.0]  # the date is 7 s after the start, 3 s of which were already waited


def _raised_while_handling(answer: BaseException, linked: bool) -> BaseException:
    """A ccxt error raised while handling ``answer``, as ccxt raises it (or with its context suppressed)."""
    error = ccxt.RateLimitExceeded("binance 429")
    try:
        try:
            raise answer
        except requests.HTTPError:
            if linked:
                raise error  # noqa: B904 - ccxt raises while handling the HTTP answer
            raise error from None
    except ccxt.RateLimitExceeded as caught:
        return caught


def test_retry_after_is_read_through_ccxt_and_alpaca_errors() -> None:
    answer = _http_error(429, {"Retry-After": "2"})

    assert retry_after(_raised_while_handling(answer, linked=True), START) == 2.0
    assert retry_after(_raised_while_handling(answer, linked=False), START) is None
    assert retry_after(APIError('{"message": "slow down"}', answer), START) == 2.0


def test_a_deadline_stops_before_a_wait_that_would_pass_it() -> None:
    waits: list[float] = []
    clock = FixedClock(START)
    venue = Venue(*[requests.ConnectionError()] * 10)

    with pytest.raises(RetriesExhausted, match="after 3 attempts"):
        _policy(waits, clock, attempts=None, cap_s=60.0, deadline_s=5.0).call(venue, what="x")
    assert waits == [1.0, 2.0]  # then 4 s more would end 7 s after the start
    assert venue.calls == 3


def test_until_stops_an_unlimited_policy_and_give_up_chooses_the_error() -> None:
    waits: list[float] = []
    venue = Venue(*[ValueError("any fault")] * 100)

    with pytest.raises(LookupError, match="gave up after 4"):
        _policy(waits, attempts=None).call(venue, what="poll", transient=lambda e: True, until=lambda: venue.calls >= 4,
                                           give_up=lambda exc, n: LookupError(f"gave up after {n}: {exc}"))
    assert venue.calls == 4


def test_a_stop_during_the_wait_ends_the_retries_before_another_attempt() -> None:
    stopped: list[bool] = []
    venue = Venue(*[ValueError("any fault")] * 100)

    def sleep(seconds: float) -> None:
        if venue.calls == 2:
            stopped.append(True)  # the stop arrives while the policy waits after the second failure

    policy = RetryPolicy(attempts=None, base_s=1.0, cap_s=4.0, jitter=0.0, sleep=sleep)
    with pytest.raises(RetriesExhausted, match="poll failed after 2 attempts: ValueError: any fault"):
        policy.call(venue, what="poll", transient=lambda e: True, until=lambda: bool(stopped))
    assert venue.calls == 2  # no request after the stop


def test_attempts_of_lets_a_generator_act_between_attempts() -> None:
    waits: list[float] = []
    venue = Venue(requests.Timeout(), requests.Timeout())
    seen: list[int] = []
    answer = None
    for attempt in _policy(waits).attempts_of(what="x"):
        seen.append(attempt.retry_state.attempt_number)
        with attempt:
            answer = venue()
    assert (answer, seen, waits) == ("ok", [1, 2, 3], [1.0, 2.0])


def test_log_lines_and_messages_never_carry_secrets(caplog: pytest.LogCaptureFixture) -> None:
    text = ("binance GET https://api.binance.com/api/v3/order?symbol=BTCUSDT&signature=abc123 "
            "apiKey=k-9f3 secret: s-77 https://api.telegram.org/bot123:AAH-xyz/getUpdates")
    cleaned = scrub(text)
    for secret in ("abc123", "k-9f3", "s-77", "AAH-xyz"):
        assert secret not in cleaned
    assert "https://api.binance.com/api/v3/order" in cleaned

    waits: list[float] = []
    with caplog.at_level(logging.WARNING, logger="pipeline.retry"), pytest.raises(RetriesExhausted) as raised:
        _policy(waits, attempts=2).call(Venue(*[ccxt.NetworkError(text)] * 2), what="order")
    for secret in ("abc123", "k-9f3", "s-77", "AAH-xyz"):
        assert secret not in caplog.text and secret not in str(raised.value)


def test_settings_give_the_attempts_and_the_first_wait() -> None:
    policy = RetryPolicy.from_settings(2, 0.5)
    assert (policy.attempts, policy.base_s, policy.cap_s) == (3, 0.5, 60.0)
    with pytest.raises(ValueError, match="backoff base"):
        RetryPolicy(base_s=5.0, cap_s=1.0)


def test_the_asynchronous_form_waits_and_gives_up_by_the_same_rules() -> None:
    import asyncio

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = _policy([]).with_options(async_sleep=sleep)
    venue = Venue(requests.Timeout("slow"), _http_error(503), requests.Timeout("slow again"))

    async def attempt_all(stop_after: int | None) -> str:
        retrying = policy.with_options(attempts=stop_after).async_attempts_of(what="quote")
        async for attempt in retrying:
            with attempt:
                return venue()
        raise AssertionError("no attempt was made")

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:  # leaves the thread's own loop alone
        with pytest.raises(RetriesExhausted, match="quote failed after 2 attempts: HTTPError: HTTP 503"):
            runner.run(attempt_all(2))
        assert waits == [1.0] and venue.calls == 2
        assert runner.run(attempt_all(None)) == "ok"  # no limit: it tries until the venue answers
    assert venue.calls == 4 and waits == [1.0, 1.0]
