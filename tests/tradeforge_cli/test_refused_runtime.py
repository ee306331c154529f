"""Mistakes at the runtime, ``runtime ctl``, train/models and data commands: each refused on one line naming the
input and what is wrong (with what would be accepted), before anything runs, with every stored file untouched.

The working folder holds a real installation (``refusal_setup``): a lake of real BTC/USDT bars, the state of a
paper runtime with three sleeves, and an MLflow store with two versions of ``hybrid-BTC-USDT-1m``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import shared_file
from tests.tradeforge_cli import refusal_setup
from tests.tradeforge_cli.cli_helpers import cli
from tests.tradeforge_cli.refusals import Refusal, check_refused

installation, work = refusal_setup.installation, refusal_setup.work
MODEL = refusal_setup.MODEL
ONE = ("--strategy", "sma_cross", "--symbol", "BTC/USDT", "--timeframe", "1m")
"""A single-strategy run the lake can replay."""


def runtime(*args: str, strategy: tuple[str, ...] = ONE) -> tuple[str, ...]:
    return ("runtime", *strategy, *args)


def train(*args: str) -> tuple[str, ...]:
    return ("train", "--model", "gru", "--symbol", "BTC/USDT", "--timeframe", "1m", *args)


def ingest(*args: str) -> tuple[str, ...]:
    return ("ingest", "--symbol", "BTC/USDT", "--timeframe", "1h", *args)


def _with_a_nan_close() -> bytes:
    """300 real BTC/USDT 1m bars as Parquet, the close of the 121st missing."""
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[:300].reset_index(drop=True)
    frame.loc[120, "close"] = float("nan")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


RUNTIME = [
    Refusal("runtime-strategy-misspelt", runtime(strategy=("--strategy", "sma_crossover", "--symbol", "BTC/USDT")),
            ("'sma_crossover'", "is not known", "sma_cross, or name a class")),
    Refusal("runtime-symbol-not-in-lake", runtime(strategy=("--strategy", "sma_cross", "--symbol", "ETH/USDT")),
            ("'ETH/USDT'", "is not in the lake", "the lake holds BTC/USDT (binance)")),
    Refusal("runtime-symbol-with-a-dash", runtime(strategy=("--strategy", "sma_cross", "--symbol", "BTC-USDT")),
            ("'BTC-USDT'", "is not in the lake", "did you mean 'BTC/USDT'?")),
    Refusal("runtime-timeframe-not-dividing-a-day", runtime("--timeframe", "7m"),
            ("--timeframe '7m'", "must divide one day evenly")),
    Refusal("runtime-negative-cash", runtime("--cash", "-5000"), ("--cash -5000", "out of range", "> 0")),
    Refusal("runtime-zero-cash", runtime("--cash", "0", "--json"), ("--cash 0", "out of range", "> 0"),
            json_error=True),
    Refusal("runtime-position-above-equity", runtime("--max-position", "1.5"),
            ("--max-position 1.5", "out of range", "<= 1")),
    Refusal("runtime-fill-with-a-dash", runtime("--fill", "next-open"),
            ("--fill 'next-open'", "next_open, close", "did you mean 'next_open'?")),
    Refusal("runtime-negative-fee", runtime("--fee-bps", "-3"), ("--fee-bps -3", ">= 0")),
    Refusal("runtime-unknown-parameter", runtime("--param", "fats=5"), ("'fats'", "fast, slow")),
    Refusal("runtime-start-after-end", runtime("--start", "2021-10-01", "--end", "2021-09-20"),
            ("--start 2021-10-01 is after --end 2021-09-20", "range is empty")),
    Refusal("runtime-start-not-a-date", runtime("--start", "2021-09-31"), ("--start '2021-09-31'", "not a date")),
    Refusal("runtime-unknown-feed", runtime("--feed", "binance"),
            ("--feed 'binance'", "replay, sample, ccxt or alpaca")),
    Refusal("runtime-unknown-broker", runtime("--broker", "papre"),
            ("--broker 'papre'", "paper, ccxt or alpaca", "did you mean 'paper'?")),
    Refusal("runtime-unknown-mode", runtime("--mode", "real"), ("--mode", "'real'", "'paper', 'live'")),
    Refusal("runtime-live-unconfirmed", runtime("--mode", "live"), ("live trading", "TRADEFORGE_LIVE_CONFIRM=yes")),
    Refusal("runtime-live-without-keys", runtime("--mode", "live"),
            ("ccxt broker", "TRADEFORGE_CCXT_API_KEY", "TRADEFORGE_CCXT_API_SECRET"),
            env={"TRADEFORGE_LIVE_CONFIRM": "yes"}),
    Refusal("runtime-no-symbol", runtime(strategy=("--strategy", "sma_cross")), ("--strategy", "--symbol")),
    Refusal("runtime-portfolio-and-strategy", runtime("--portfolio", "{work}/sleeves.toml"),
            ("--portfolio and --strategy and --symbol exclude each other",),
            files={"sleeves.toml": 'cash = 1000\n[[strategies]]\nid = "a"\nstrategy = "sma_cross"\n'}),
    Refusal("runtime-replay-file-missing", runtime("--data", "{work}/bars.parquet"),
            ("--data", "bars.parquet", "does not exist")),
    Refusal("runtime-fresh-over-saved-state", runtime("--fresh"),
            ("--fresh refused", "already holds a runtime's state")),
    Refusal("runtime-batch-zero", runtime("--batch", "0"), ("--batch", "at least 1")),
    Refusal("runtime-replay-file-with-a-nan-close", runtime("--data", "bars.parquet"),
            ("--data 'bars.parquet'", "quality gate", "non-finite close", "row 121"),
            files={"bars.parquet": _with_a_nan_close()}),
]

CTL = [
    Refusal("ctl-command-misspelt", ("runtime", "ctl", "pasue"),
            ("'pasue'", "'pause', 'resume', 'flatten', 'reset-breaker', 'stop'", "did you mean 'pause'?")),
    Refusal("ctl-sleeve-by-its-id", ("runtime", "ctl", "pause", "--sleeve", "trend"),
            ("--sleeve 'trend'", "ml:BTC/USDT, reversion:BTC/USDT, trend:BTC/USDT", "did you mean 'trend:BTC/USDT'?")),
    Refusal("ctl-sleeve-unknown-json", ("runtime", "ctl", "flatten", "--sleeve", "momentum:BTC/USDT", "--json"),
            ("--sleeve 'momentum:BTC/USDT'", "is not a sleeve"), json_error=True),
    Refusal("ctl-no-runtime-state", ("runtime", "ctl", "stop"), ("no runtime state at", "elsewhere", "started"),
            env={"TRADEFORGE_DATA_DIR": "{work}/elsewhere"}),
    Refusal("ctl-no-command", ("runtime", "ctl"), ("Missing argument", "command")),
]

MODELS = [
    Refusal("train-model-misspelt", ("train", "--model", "lsmt", "--symbol", "BTC/USDT", "--timeframe", "1m"),
            ("--model", "'lsmt'", "'lstm', 'lstm_attention', 'gru'", "did you mean 'lstm'?")),
    Refusal("train-model-missing", ("train", "--symbol", "BTC/USDT", "--timeframe", "1m"),
            ("Missing option '--model'", "lstm, lstm_attention, gru")),
    Refusal("train-threshold-a-percentage", train("--threshold", "55"), ("--threshold", "at most 1")),
    Refusal("train-base-unknown", train("--base", "golden-cross"), ("--base 'golden-cross'", "golden_cross")),
    Refusal("train-symbol-not-in-lake", ("train", "--model", "gru", "--symbol", "SOL/USDT", "--timeframe", "1m"),
            ("'SOL/USDT'", "not in the lake", "BTC/USDT")),
    Refusal("train-start-after-end", train("--start", "2021-10-05", "--end", "2021-10-01"),
            ("--start 2021-10-05 is after --end 2021-10-01",)),
    Refusal("train-zero-epochs", train("--epochs", "0", "--json"), ("--epochs", "at least 1"), json_error=True),
    Refusal("features-timeframe-in-weeks", ("features", "build", "--symbol", "BTC/USDT", "--timeframe", "1w"),
            ("--timeframe '1w'", "m, h or d")),
    Refusal("promote-version-unknown", ("models", "promote", MODEL, "7"),
            (f"model '{MODEL}' has no version '7'", "its versions are 1, 2")),
    Refusal("promote-version-with-a-v", ("models", "promote", MODEL, "v1"), ("no version 'v1'", "did you mean '1'?")),
    Refusal("promote-model-misspelt", ("models", "promote", "hybrid-BTC-USDT-1h", "1", "--json"),
            ("'hybrid-BTC-USDT-1h' is not registered", MODEL), json_error=True),
    Refusal("rollback-model-unknown", ("models", "rollback", "golden_cross"),
            ("'golden_cross' is not registered", MODEL)),
]

DATA = [
    Refusal("ingest-pair-without-slash", ingest("--symbol", "BTCUSDT", "--source", "files", "--path", "{work}/b.csv"),
            ("--symbol 'BTCUSDT'", "BTC/USDT"), files={"b.csv": "timestamp,open,high,low,close,volume\n"}),
    Refusal("ingest-path-without-files-source", ingest("--path", "{work}/incoming/btc-1h.parquet"),
            ("--path is read only with --source files", "--source sample")),
    Refusal("ingest-path-missing", ingest("--source", "files", "--path", "{work}/incoming/eth-1h.parquet"),
            ("--path", "eth-1h.parquet", "does not exist")),
    Refusal("ingest-files-without-path", ingest("--source", "files"), ("--source files needs --path",)),
    Refusal("ingest-exchange-misspelt", ingest("--source", "ccxt", "--exchange", "binanse", "--json"),
            ("--exchange 'binanse'", "did you mean 'binance'?"), json_error=True),
    Refusal("ingest-since-in-the-future", ingest("--since", "2999-01-01"), ("--since 2999-01-01", "in the future")),
    Refusal("ingest-source-unknown", ingest("--source", "binance"),
            ("--source", "'binance'", "'sample', 'ccxt', 'alpaca', 'files'")),
    Refusal("ingest-columns-malformed", ingest("--source", "files", "--path", "{work}/incoming/btc-1h.parquet",
                                                "--columns", "close"), ("'close'", "canonical=file_column")),
    Refusal("health-symbol-not-in-lake", ("data", "health", "--symbol", "ETH/USDT"),
            ("--symbol ETH/USDT", "binance BTC/USDT 1h, binance BTC/USDT 1m")),
    Refusal("sql-table-misspelt", ("data", "sql", "select count(*) from barz", "--json"),
            ("barz", "does not exist", 'Did you mean "bars"'), json_error=True),
    Refusal("sql-copy-to-a-file", ("data", "sql", "copy (select * from bars) to '{work}/bars.csv'"),
            ("data sql only reads", "the query holds COPY")),  # nothing written: the folder is byte-identical
    Refusal("sql-select-then-drop", ("data", "sql", "select 1; drop view bars"),
            ("data sql only reads", "the query holds DROP")),
]


@pytest.mark.parametrize("case", [case.param() for case in RUNTIME])
def test_a_runtime_mistake_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("case", [case.param() for case in CTL])
def test_a_control_command_mistake_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("case", [case.param() for case in MODELS])
def test_a_train_or_models_mistake_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("case", [case.param() for case in DATA])
def test_a_data_command_mistake_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


def test_a_control_command_for_a_sleeve_is_queued_as_the_runtime_names_it(work: Path) -> None:
    """The counterpart of the refused sleeves: the name the refusal suggests is accepted and queued."""
    result = cli("runtime", "ctl", "pause", "--sleeve", refusal_setup.SLEEVES[2], "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"id": json.loads(result.stdout)["id"], "command": "pause",
                                         "sleeve": "trend:BTC/USDT"}


SINGLE = ["--strategy", "sma_cross", "--symbol", "BTC/USDT"]


@pytest.mark.parametrize(("argv", "named"), [
    ([*SINGLE, "--fill", "next-open"], "did you mean 'next_open'?"),
    ([*SINGLE, "--max-position", "1.5"], "--max-position 1.5 is out of range"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["ctl", "pasue"], "command 'pasue' is not known"),
    (["ctl", "pause", "--sleeve", "trend"], "did you mean 'trend:BTC/USDT'?"),
], ids=["fill", "max-position", "unknown-option", "ctl-command", "ctl-sleeve"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_python_m_runtime_refuses_as_tradeforge_does(work: Path, argv: list[str], named: str, as_json: bool,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.__main__ import main

    try:
        code = main([*argv, *(["--json"] if as_json else [])])
    except SystemExit as exited:  # a usage error, as argparse ends it
        code = exited.code
    assert code in (1, 2)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], captured.err
    if as_json:
        assert named in json.loads(captured.out)["error"]
    else:
        assert captured.out == ""


def test_the_runtime_refuses_what_the_engine_refuses_and_nothing_more() -> None:
    """The runtime checks its engine options before anything is opened, with the engine's own bounds: the two
    cannot drift apart. A single-strategy runtime trades without leverage, so its position cap is the engine's at
    leverage 1."""
    from pipeline.accepted import bounds, choices
    from pipeline.domain import DataError
    from pipeline.engine import EngineConfig
    from runtime.config import RuntimeConfig

    for name in ("fee_bps", "slippage_bps", "cash"):
        assert bounds(RuntimeConfig.model_fields[name]) == bounds(EngineConfig.model_fields[name]), name
    assert choices(RuntimeConfig.model_fields["fill"]) == choices(EngineConfig.model_fields["fill"])
    assert EngineConfig(max_position=1.0).leverage == 1.0
    assert RuntimeConfig(max_position=1.0).max_position == 1.0
    for refused in (0.0, 1.01):
        with pytest.raises(ValueError, match="max_position"):
            EngineConfig(max_position=refused)
        with pytest.raises(DataError, match="--max-position"):
            RuntimeConfig.of(max_position=refused)
