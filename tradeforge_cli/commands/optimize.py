"""``optimize``: search a strategy's parameters over a file of bars or the lake, with costs, fills and breakers
as ``backtest`` has them; the study lives in Optuna's storage, the report under ``<data_dir>/research/``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tradeforge_cli.commands.backtest import (
    ColumnsOption,
    backtest_bars,
    engine_config,
    refused,
    strategy_frame,
)
from tradeforge_cli.commands.options import (
    CashOption,
    CooldownOption,
    EndOption,
    FeeOption,
    FillOption,
    JsonFlag,
    MaxPositionOption,
    NoBreakersOption,
    ParamOption,
    SlippageOption,
    StartOption,
    VenueOption,
)
from tradeforge_cli.commands.output import emit, err, format_value, load_settings, out, pairs


@contextmanager
def _bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Progress bars on stderr: one per search (the whole history, then each walk-forward fold)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as shown:
        def start(label: str, total: int) -> Callable[[int], None]:
            task = shown.add_task(label, total=total)
            return lambda done: shown.advance(task, done)

        yield start


@contextmanager
def _search(address: str | None, url: str) -> Iterator[Any]:
    """The trials' search: here, or through a Dask client to the scheduler at ``address`` (the optimize flow's
    fanned search, without Prefect)."""
    from pipeline.research.optimise import search_here

    if not address:
        yield search_here
        return
    import distributed

    from pipeline.domain import DataError
    from pipeline.research.fanout import client_fan, fanned_search

    try:
        client = distributed.Client(address, set_as_default=False, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise DataError(f"--dask-address {address}: no Dask scheduler answers there ({exc})") from None
    with client:
        yield fanned_search(url, client_fan(client))


def optimize(
    strategy: Annotated[str, typer.Option(help="A strategy name, PATH.py:Class or package.module:Class.")],
    space: Annotated[list[str] | None, typer.Option(
        "--space", help="A parameter to search: name=LOW:HIGH[:STEP] (repeatable; default: every parameter whose "
                        "model declares both bounds).")] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Evaluate every point of the space.")] = False,
    trials: Annotated[int | None, typer.Option(
        help="Trials Optuna samples (TPE, seeded) without --grid [default: 100].")] = None,
    objective: Annotated[str, typer.Option(
        help="sharpe, sortino, calmar, return, or an expression of metrics (sharpe - 2 * max_drawdown).")] = "sharpe",
    walk_forward: Annotated[int, typer.Option(
        "--walk-forward", help="Walk-forward folds (0: none): choose on each block, score on the next.")] = 0,
    min_trades: Annotated[int, typer.Option(help="A trial closing fewer trades has no value.")] = 0,
    jobs: Annotated[int | None, typer.Option(help="Cores the sweep uses (default: all).")] = None,
    study: Annotated[str | None, typer.Option(
        help="Study name (default: derived from the search, so the same search resumes).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 7,
    symbol: Annotated[str | None, typer.Option(help="Symbol to read from the lake.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe (resampled from a finer one if needed).")] = None,
    start: StartOption = None,
    end: EndOption = None,
    venue: VenueOption = None,
    data: Annotated[Path | None, typer.Option(
        help="A Parquet/CSV file of bars instead of the lake (checked as an ingest checks it).")] = None,
    columns: ColumnsOption = None,
    param: ParamOption = None,
    fee_bps: FeeOption = 10.0,
    slippage_bps: SlippageOption = 0.0,
    fill: FillOption = "next_open",
    cash: CashOption = 100_000.0,
    max_position: MaxPositionOption = 0.25,
    no_breakers: NoBreakersOption = False,
    breaker_cooldown_bars: CooldownOption = None,
    mlflow: Annotated[bool, typer.Option(help="Log the study as an MLflow run.")] = True,
    dask_address: Annotated[str | None, typer.Option(
        "--dask-address", help="Send the trials to the Dask scheduler at ADDR (tcp://host:8786); its workers "
                               "must reach the study storage. Default: run them here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Search a strategy's parameters (grid or Optuna TPE), optionally walk-forward; measures overfitting."""
    from pipeline.domain import DataError
    from pipeline.research.objective import Objective
    from pipeline.research.optimise import Request, optimise
    from pipeline.research.space import parse_space
    from pipeline.research.store import document, save_report
    from pipeline.research.sweep import Market
    from pipeline.strategies import REGISTRY
    from runtime.config import parse_params

    settings = load_settings()
    try:
        if grid and trials is not None:
            raise DataError(f"--trials {trials} sets how many points Optuna samples; --grid evaluates every point of "
                            "the space: give one of them")
        spec = REGISTRY.spec(strategy)
        request = Request(strategy, parse_space(spec, space or [], parse_params(param or [])),
                          Objective.parse(objective, min_trades), grid, 100 if trials is None else trials, seed,
                          walk_forward, jobs, study)
        config = engine_config(cash, fee_bps, slippage_bps, fill, max_position, breaker_cooldown_bars, no_breakers)
        bars, tf, instrument = backtest_bars(settings, data, symbol, timeframe, start, end, venue, columns)
        sample = spec.build(request.space.example(grid))
        frame = strategy_frame(settings, sample, bars, tf, symbol if data is None else None, venue, start, end)
        market = Market.of(bars, config, tf, instrument, frame)
        with _bars() as progress, _search(dask_address, settings.study_url) as search:
            report = optimise(request, settings.study_url, market, config, tf, instrument, progress, search)
    except DataError as exc:
        raise refused(exc) from exc
    folder = save_report(report, settings.data_dir / "research")
    shown: dict[str, Any] = {**document(report), "stored": str(folder)}
    if mlflow:
        from pipeline.research.tracking import log_study

        shown["mlflow_run"] = log_study(settings.mlflow_tracking_uri, report, folder)
    rows = [("study", escape(shown["study"])), ("trials", f"{shown['completed']} of {shown['trials']} with a value"),
            ("best_params", escape(str(shown["best_params"]))), ("best_value", format_value(shown["best_value"])),
            ("backtest_value", format_value(shown["backtest_value"]))]
    if "walk_forward" in shown:
        for fold in shown["walk_forward"]["folds"]:
            rows.append((f"fold {fold['fold']}", f"in {format_value(fold['in_sample_value'])} / out "
                                                 f"{format_value(fold['out_of_sample_value'])}"))
        rows.append(("out_of_sample", format_value(shown["walk_forward"]["out_of_sample_value"])))
    rows += [("seconds", format_value(shown["seconds"])), ("stored", escape(str(folder)))]
    emit(shown, as_json, pairs(rows, f"optimize {escape(strategy)}"))
    if not as_json:
        out.print(escape(shown["overfitting"]["verdict"]))


def register(app: typer.Typer) -> None:
    app.command()(optimize)
