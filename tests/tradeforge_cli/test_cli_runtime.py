"""The runtime command line: it round-trips through its config and both commands name a bad option."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tradeforge_cli import cli_helpers
from tests.tradeforge_cli.cli_helpers import assert_fails_cleanly, cli

data_dir = cli_helpers.data_dir  # the test's own data dir (TRADEFORGE_DATA_DIR)


# ------------------------------------------------------------------------------------------------ runtime config
def test_the_runtime_command_line_round_trips_through_its_config(tmp_path: Path) -> None:
    from runtime.config import RuntimeConfig, parse_args, runtime_command, to_args

    config = RuntimeConfig(mode="live", strategy="sma_cross", symbol="BTC/USDT", data=tmp_path / "bars.parquet",
                           venue="binance", feed="ccxt", speed="60",
                           batch=1, start="2024-01-01", params=("fast=10", "slow=30"), fee_bps=5.0, no_breakers=True,
                           breaker_cooldown_bars=30, fresh=True, verbose=True, as_json=True)

    args = to_args(config)
    assert parse_args(args) == config
    assert args[args.index("--param") + 1] == "fast=10" and args.count("--param") == 2
    assert "--json" in args and "--no-breakers" in args and "--timeframe" not in args  # defaults are left out
    assert runtime_command(config, "python")[:3] == ["python", "-m", "runtime"]
    assert parse_args([]) == RuntimeConfig()


@pytest.mark.parametrize(("args", "named"), [
    (["--speed", "fast"], "--speed 'fast' is not a number (or 'max')"),
    (["--speed", "0"], "--speed must be positive"),
    (["--param", "fast"], "--param 'fast' is not of the form name=value"),
    (["--fresh", "--restore"], "--fresh and --restore exclude each other"),
])
def test_a_bad_runtime_option_is_named_by_both_commands(data_dir: Path, args: list[str], named: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.config import parse_args

    result = cli("runtime", "--strategy", "sma_cross", "--symbol", "BTC/USDT", *args)
    assert_fails_cleanly(result, named)

    with pytest.raises(SystemExit) as exited:
        parse_args(["--strategy", "sma_cross", *args])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err
