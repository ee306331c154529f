"""``features build``, ``train`` and ``models list|promote|rollback``: the model life cycle from the command line."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from tradeforge_cli.commands.options import EndOption, JsonFlag, StartOption, VenueOption, group
from tradeforge_cli.commands.output import (
    emit,
    fail,
    format_value,
    load_settings,
    pairs,
    progress,
    say,
    timeframe_option,
)

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.domain import Timeframe
    from pipeline.models.registry import ModelRegistry
    from pipeline.settings import Settings


class ModelKind(StrEnum):
    lstm = "lstm"
    lstm_attention = "lstm_attention"
    gru = "gru"


class PromoteChoice(StrEnum):
    auto = "auto"
    never = "never"
    force = "force"


def lake_series(settings: Settings, symbol: str, timeframe: str, start: str | None, end: str | None,
                venue: str | None) -> tuple[pd.DataFrame, Timeframe, Any]:
    """A series from the lake (refused when the range holds no bar), its timeframe and instrument."""
    from pipeline.backtest.inputs import date_range, no_bars
    from pipeline.data.catalog import read_bars
    from pipeline.data.lake import Lake

    tf = timeframe_option(timeframe)
    lo, hi = date_range(start, end)
    bars = read_bars(settings, symbol, tf, lo, hi, venue)
    if bars.empty:
        raise no_bars(settings, symbol, tf, venue, lo, hi)
    instrument = Lake(settings.lake_dir).find(symbol, venue=venue)[0].instrument
    return bars, tf, instrument


def features_build(
    symbol: Annotated[str, typer.Option(help="Symbol in the lake.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe (resampled from a finer one if needed).")],
    venue: VenueOption = None,
    start: StartOption = None,
    end: EndOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Build the default feature set for a series and store it under <data_dir>/features/<spec hash>/."""
    from pipeline.domain import DataError
    from pipeline.features.build import FeatureSpec, build_features, store_features

    settings = load_settings()
    try:
        bars, tf, instrument = lake_series(settings, symbol, timeframe, start, end, venue)
        spec = FeatureSpec()
        frame = build_features(bars, spec, instrument.asset_class)
        path = store_features(frame, spec, settings.data_dir, instrument.venue, instrument.key, str(tf))
    except DataError as exc:
        raise fail(str(exc)) from exc
    document = {
        "symbol": instrument.symbol, "venue": instrument.venue, "timeframe": str(tf), "spec_hash": spec.hash(),
        "rows": len(frame), "warmup_rows_dropped": min(spec.warmup, len(bars)),
        "columns": [c for c in frame.columns if c != "timestamp"], "path": str(path),
        "first": frame["timestamp"].iloc[0].isoformat() if len(frame) else None,
        "last": frame["timestamp"].iloc[-1].isoformat() if len(frame) else None,
    }
    rows = [(key, escape(str(document[key]))) for key in ("spec_hash", "rows", "warmup_rows_dropped", "first",
                                                          "last", "path")]
    table = pairs([*rows, ("columns", escape(", ".join(document["columns"])))], f"features {instrument.symbol} {tf}")
    emit(document, as_json, table)


def train(
    model: Annotated[ModelKind, typer.Option(help="Network: lstm, lstm_attention or gru.")],
    symbol: Annotated[str, typer.Option(help="Symbol in the lake.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe.")],
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs per fold (early stopping may stop sooner).")] = 20,
    promote: Annotated[PromoteChoice, typer.Option(help="auto: apply the gate; never; force.")] = PromoteChoice.auto,
    hidden: Annotated[int, typer.Option(min=1, help="Hidden size.")] = 32,
    seq_len: Annotated[int, typer.Option(min=2, help="Sequence length in bars.")] = 32,
    folds: Annotated[int, typer.Option(min=1, help="Walk-forward folds.")] = 3,
    threshold: Annotated[float, typer.Option(min=0, max=1, help="Probability needed to confirm an entry.")] = 0.55,
    base: Annotated[str, typer.Option(
        help="Rule strategy the model confirms: a strategy name, PATH.py:Class or package.module:Class.")
    ] = "golden_cross",
    venue: VenueOption = None,
    start: StartOption = None,
    end: EndOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Train, evaluate walk-forward, register in MLflow, and promote if the gate passes."""
    from pydantic import ValidationError

    from pipeline.domain import DataError
    from pipeline.models import ModelConfig
    from pipeline.models.lifecycle import TrainRequest, train_and_register
    from pipeline.models.registry import ModelRegistry

    settings = load_settings()
    try:
        _check_base(base)
        bars, tf, instrument = lake_series(settings, symbol, timeframe, start, end, venue)
        try:
            config = ModelConfig(kind=model.value, epochs=epochs, hidden=hidden, seq_len=seq_len)
        except ValidationError as exc:
            raise DataError(str(exc)) from exc
        request = TrainRequest(model=config, base_strategy=base, threshold=threshold, folds=folds,
                               promote=promote.value)
        registry = ModelRegistry(settings.mlflow_tracking_uri)
        with progress(f"train {model.value} on {instrument.symbol} {tf}") as _:
            outcome = train_and_register(bars, instrument, tf, request, registry, progress=say)
    except DataError as exc:
        raise fail(str(exc)) from exc
    document = outcome.to_json()
    rows = [(key, escape(str(document[key]))) for key in ("run_id", "model_name", "version", "promoted", "reason")]
    rows += [(key, escape(format_value(value))) for key, value in outcome.metrics.items()]
    emit(document, as_json, pairs(rows, f"train {outcome.model_name} v{outcome.version}"))


def _check_base(base: str) -> None:
    """The rule strategy a model confirms, checked before any training (``DataError`` naming ``--base``)."""
    from pipeline.domain import DataError
    from pipeline.strategies import REGISTRY

    try:
        REGISTRY.build(base)
    except DataError as exc:
        raise DataError(f"--base {base!r}: {exc}") from None


def _check_registered(registry: ModelRegistry, name: str, version: str | None = None) -> None:
    """``name`` (and ``version``) registered, or a ``DataError`` listing what is."""
    from pipeline.addresses import masked
    from pipeline.domain import DataError
    from pipeline.input_errors import did_you_mean

    versions: dict[str, list[str]] = {}
    for row in registry.list_models():
        versions.setdefault(str(row["name"]), []).append(str(row["version"]))
    if name not in versions:
        if not versions:
            raise DataError(f"model {name!r} is not registered: no model is registered yet in "
                            f"{masked(registry.tracking_uri)} (tradeforge train registers one)")
        raise DataError(f"model {name!r} is not registered; registered models: {', '.join(sorted(versions))}"
                        f"{did_you_mean(name, versions)}")
    if version is not None and version not in versions[name]:
        known = sorted(versions[name], key=lambda v: int(v) if v.isdigit() else 0)
        bare = version[1:] if version[:1] in ("v", "V") and version[1:] in known else None
        raise DataError(f"model {name!r} has no version {version!r}; its versions are {', '.join(known)}"
                        + (f"; did you mean {bare!r}?" if bare else ""))


def models_list(as_json: JsonFlag = False) -> None:
    """Registered models and versions; which one carries the production alias."""
    from pipeline.models.registry import ModelRegistry

    rows = ModelRegistry(load_settings().mlflow_tracking_uri).list_models()
    table = Table(title="models", box=box.SIMPLE)
    for name in ("name", "version", "production", "oos_sharpe", "oos_max_drawdown", "oos_auc", "promotion"):
        table.add_column(name)
    for row in rows:
        table.add_row(escape(row["name"]), row["version"], "yes" if row["production"] else "",
                      format_value(row["oos_sharpe"]), format_value(row["oos_max_drawdown"]),
                      format_value(row["oos_auc"]), escape(row["promotion"]))
    emit(rows, as_json, table)


def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to give the production alias.")],
    as_json: JsonFlag = False,
) -> None:
    """Give VERSION of NAME the production alias (a manual decision, recorded as such)."""
    from pipeline.domain import DataError
    from pipeline.models.registry import ModelRegistry

    registry = ModelRegistry(load_settings().mlflow_tracking_uri)
    try:
        _check_registered(registry, name, version)
        registry.promote(name, version, "promoted by hand (tradeforge models promote)")
    except DataError as exc:
        raise fail(str(exc)) from exc
    document = {"name": name, "production": version}
    emit(document, as_json, pairs([(escape(name), f"production → v{escape(version)}")]))


def models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: JsonFlag = False,
) -> None:
    """Give the production alias back to the previously promoted version."""
    from pipeline.domain import DataError
    from pipeline.models.registry import ModelRegistry

    registry = ModelRegistry(load_settings().mlflow_tracking_uri)
    try:
        _check_registered(registry, name)
        version = registry.rollback(name)
    except DataError as exc:
        raise fail(str(exc)) from exc
    document = {"name": name, "production": version}
    emit(document, as_json, pairs([(escape(name), f"production → v{escape(version)} (rolled back)")]))


def register(app: typer.Typer) -> None:
    features_app = group("Build model features from the lake.")
    features_app.command("build")(features_build)
    app.add_typer(features_app, name="features")
    app.command()(train)
    models_app = group("Registered models: list, promote, roll back.")
    models_app.command("list")(models_list)
    models_app.command("promote")(models_promote)
    models_app.command("rollback")(models_rollback)
    app.add_typer(models_app, name="models")
