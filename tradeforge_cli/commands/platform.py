"""``up`` (the whole platform on 127.0.0.1), ``config show|env-example|table`` (the settings) and ``doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tradeforge_cli.commands.options import JsonFlag, group
from tradeforge_cli.commands.output import emit, err, fail, load_settings, out, pairs

HOME = Path(__file__).resolve().parents[2]
"""The checkout: where ``dashboards/`` and the Prefect and MLflow folders of ``up`` live."""


def up(
    bootstrap: Annotated[bool, typer.Option(help="On an empty lake, bootstrap the demo content first.")] = True,
    with_runtime: Annotated[bool, typer.Option("--runtime/--no-runtime", help="Start the paper runtime.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds each service may take to answer.")] = 180.0,
) -> None:
    """Bring the platform up on 127.0.0.1: Prefect (server + deployments), MLflow UI, dashboard, paper runtime.

    Ctrl-C stops everything cleanly. A second start reuses the lake, the registry and the runtime's state. Nothing
    started here outlives this process, however it ends; a start first ends what a killed ``up`` left running.
    """
    import os
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tradeforge_cli import up as platform
    from tradeforge_cli import up_guard

    settings = load_settings()
    logs = settings.data_dir / "logs"

    def say(text: str) -> None:
        err.print(escape(text), highlight=False)

    instance = up_guard.new_instance()
    try:
        env = platform.base_env(settings, HOME, instance)
        os.environ.update(platform.own_env(env))
        platform.clear_previous(settings, platform.GRACE_S, say)
        by_name = {s.name: s for s in platform.services(settings, HOME, platform.demo_runtime(settings))}
        taken = platform.taken_addresses(settings)
    except platform.UpError as exc:
        raise fail(str(exc)) from exc
    if taken:
        raise fail(f"{', '.join(taken)} already in use: is tradeforge already up? Stop it, or set "
                   "TRADEFORGE_PREFECT_API_URL / TRADEFORGE_MLFLOW_UI_URL / TRADEFORGE_DASHBOARD_URL / "
                   "TRADEFORGE_API_URL to other ports")
    record = up_guard.UpRecord.new(platform.pid_file(settings), instance)
    guard = up_guard.start_guard(instance, record.path, platform.GRACE_S, logs / "guard.log")
    record.save()
    supervisor = platform.Supervisor(env, logs, say, on_spawn=record.add)
    code = 0
    with platform.stop_signals() as received:
        try:
            for name in ("prefect", "mlflow", "dashboard"):
                err.print(f"starting {name} …")
                supervisor.start(by_name[name], timeout)
                if received:
                    raise platform.UpError(f"stopped by {received[0]}")
            if bootstrap and platform.needs_bootstrap(settings):
                steps = platform.bootstrap_steps(settings)
                columns = (TextColumn("bootstrap"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                           TextColumn("{task.description}"), TimeElapsedColumn())
                with Progress(*columns, console=err) as progress:
                    task = progress.add_task("", total=len(steps))
                    for description, step in steps:
                        progress.update(task, description=description)
                        step()
                        progress.advance(task)
                        if received:
                            raise platform.UpError(f"stopped by {received[0]}")
            names = ["deployments", *(["runtime"] if with_runtime else []), "api"]
            for name in names:
                err.print(f"starting {name} …")
                supervisor.start(by_name[name], timeout)
            rows = [(service.name, escape(service.url)) for service in supervisor.started]
            rows.append(("logs", escape(str(logs))))
            out.print(pairs(rows, "tradeforge is up (Ctrl-C stops everything)"))
            while not received:
                dead = supervisor.dead()
                if dead:
                    raise platform.UpError(
                        ", ".join(f"{s.name} exited ({s.process.returncode if s.process else '?'})" for s in dead)
                        + f"; see {logs}")
                time.sleep(0.5)
            err.print(f"{received[0]}: stopping …")
        except platform.UpError as exc:
            err.print(f"[red]{escape(str(exc))}[/]")
            code = 1
        finally:
            supervisor.stop()
            record.remove()
            if guard.stdin is not None:
                guard.stdin.close()  # the guard ends at once whatever the services left running
    err.print("stopped")
    raise typer.Exit(code)


def config_show(as_json: JsonFlag = False) -> None:
    """The settings in effect (environment, .env, defaults); secrets are shown as set or not, never their value
    (nor a URL's password)."""
    from pydantic import SecretStr

    from pipeline.addresses import masked
    from pipeline.settings import Settings

    settings = load_settings()
    document: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            document[name] = "(set)" if value.get_secret_value() else None
        elif isinstance(value, int | float | bool | list) or value is None:
            document[name] = value
        else:
            document[name] = masked(str(value))  # a URL's password is a secret too
    table = pairs([(key, escape("" if value is None else str(value))) for key, value in document.items()])
    emit(document, as_json, table)


def config_env_example() -> None:
    """Print the .env template (every setting, its meaning and default)."""
    from tradeforge_cli.config_doc import env_example

    typer.echo(env_example(), nl=False)


def config_table() -> None:
    """Print the README's settings table (Markdown)."""
    from tradeforge_cli.config_doc import markdown_table

    typer.echo(markdown_table(), nl=False)


def doctor(as_json: JsonFlag = False) -> None:
    """Check the install and the configuration; non-zero exit when something is broken."""
    from pipeline.doctor import Status, run_checks

    checks = run_checks(load_settings())
    table = Table(title="tradeforge doctor")
    for name in ("check", "status", "detail", "what to do"):
        table.add_column(name)
    colours = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    for check in checks:
        table.add_row(
            check.name, f"[{colours[check.status]}]{check.status.value}[/]", escape(check.detail), escape(check.fix)
        )
    document = [{"check": c.name, "status": c.status.value, "detail": c.detail, "fix": c.fix} for c in checks]
    emit(document, as_json, table)
    if any(c.status is Status.FAIL for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(up)
    config_app = group("Settings: current values and their documentation.")
    config_app.command("show")(config_show)
    config_app.command("env-example")(config_env_example)
    config_app.command("table")(config_table)
    app.add_typer(config_app, name="config")
    app.command()(doctor)
