"""Runtime benchmark: the live path's closed bar → order latency, and paper replay throughput.

Both parts run the product's own code as the ``tradeforge runtime`` command runs it, on the real BTC/USDT 1m
file (``shared/data/binance_BTC-USDT_1m.parquet``, read in place): the runtime is assembled by its own wiring
(``runtime.wiring.wire`` on a ``RuntimeConfig``, as ``tradeforge runtime`` does), so the node, feed, broker,
state store, strategies and scorer are the shipped ones. Checkouts older than ``runtime.wiring`` are measured
with their own copy of this script.

1. Latency (the live path). An LSTM (hidden 64, sequence 64) is trained on a small slice of the file by the
   product's training path (``train_and_register``, as ``tradeforge train`` does: walk-forward fold, MLflow
   run, registered version) in a temporary MLflow SQLite store, and forced to the ``production`` alias. One
   sleeve runs the shipped ``hybrid`` strategy (base ``sma_cross`` 10/30, entries kept where the model's
   probability is >= 0.5) whose ``model_score`` comes from ``runtime.models.ModelScorer``, which loads that
   model by alias. The node trades with the paper broker and a SQLite state store, fed by ``ReplayFeed`` with
   one bar per batch (``tradeforge runtime --batch 1``), so every bar is one transaction, as live.

   For each history size S (default 1,000, 10,000 and 100,000 bars) a fresh process starts the node with the
   feed holding S bars of history before the first measured bar (its cursor, in the state store, sits 2 bars
   earlier: a runtime starting on a feed that already holds its history), then measures each bar from the
   moment the feed hands it to the node until the node asks for the next one: control commands, the registry
   poll when due (every ``model_poll_seconds``), features, LSTM, strategy, engine, broker and the committed
   transaction (orders, fills, ledgers, cursor). The feed is the real ``ReplayFeed`` seen through a thin
   delegating wrapper that only reads the clock. The first 2 bars after start are not counted (one-off
   loading and warm-up); their times are shown apart. The measured bars are the same market bars (the file's
   last ones) at every size. Up to ``--bars`` bars (default 300) are measured per size, fewer when a size's
   measured time passes ``--budget`` seconds (default 60; at least 5 bars): the table says how many bars
   each figure is over (with few bars the p99 is close to the maximum). Resident memory (RSS) is read after
   every measured bar, and compared between sizes after the same number of measured bars (all of them when
   every size measured as many).

   Targets: p99 <= 20 ms at every size; the largest size's p99 within 1.2x of the smallest size's; RSS at
   the largest size within 50 MB of RSS at the smallest.

2. Replay throughput. The whole file (653,623 bars) through a two-sleeve portfolio (sma_cross 10/30 with 60 %
   of the cash, rsi_reversion with 40 %), paper broker, SQLite state store, replayed at max speed in batches of
   8,192 bars (the CLI's default):
   * in process: bars/s of ``Node.run`` alone (after start-up);
   * whole process: ``tradeforge runtime --mode paper --feed replay --data FILE --speed max --portfolio FILE
     --fresh --json`` as a subprocess, wall time from launch to exit (start-up, imports and reading the file
     included), median of ``--runs`` runs (default 3), with the process's peak RSS.

   Target: >= 200,000 bars/s whole process.

Every measurement runs in a process of its own, in a temporary folder (state store, MLflow store, settings
from the environment only). The code measured is the checkout this file belongs to, or the one given with
``--checkout DIR`` (its root comes first on ``sys.path``, and on ``PYTHONPATH`` for the CLI subprocess; the
script refuses to run if a subprocess would import another checkout's code).

This file is the orchestration: arguments, the two parts, the targets and the table. The measured processes
are this script again, run with ``--worker setup|latency|replay``; what runs in them (the workers, the timed
feed, the memory readers) and the measured portfolios are in ``bench/runtime_workers.py``, imported from the
folder beside this file: the benchmark's code is always this copy's, whichever checkout it measures.

    python bench/runtime.py [--only latency|replay] [--sizes 1000,10000,100000] [--bars 300] [--budget 60]
                            [--runs 3] [--data FILE] [--checkout DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
"""The checkout whose code is measured: this file's, or ``--checkout DIR``."""
HERE = Path(__file__).resolve().parent
"""This file's folder, where its worker module is; not ``REPO / "bench"``, which may be another checkout's."""
if str(HERE) not in sys.path:  # run as a script it is there already (as sys.path[0]) unless under ``python -P``
    sys.path.append(str(HERE))

from runtime_workers import MB, MIN_BARS, TWO_SLEEVES, WARMUP_BARS, WORKERS  # noqa: E402

DATA_NAME = "binance_BTC-USDT_1m.parquet"
P99_TARGET_MS = 20.0
P99_GROWTH_TARGET = 1.2
RSS_GROWTH_TARGET_MB = 50.0
REPLAY_TARGET = 200_000.0


# ---------------------------------------------------------------------------------------------- helpers
def find_data(given: str | None) -> Path:
    """The real BTC/USDT 1m file: ``--data``, ``$TRADEFORGE_SHARED_DATA``, or ``shared/data`` beside the repo."""
    if given:
        return Path(given).resolve()
    configured = os.environ.get("TRADEFORGE_SHARED_DATA")
    folders = [Path(configured)] if configured else []
    folders += [parent / "shared" / "data" for parent in REPO.parents]
    folders.append(Path("/work/shared/data"))
    for folder in folders:
        if (folder / DATA_NAME).exists():
            return (folder / DATA_NAME).resolve()
    raise SystemExit(f"{DATA_NAME} not found next to the repository: give --data or set TRADEFORGE_SHARED_DATA")


def child_env(folder: Path, tracking_uri: str | None = None) -> dict[str, str]:
    """The environment of a measured process: this checkout first on the path, state and models in ``folder``,
    no notifications."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFORGE_TELEGRAM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["TRADEFORGE_DATA_DIR"] = str(folder / "data")
    env.pop("TRADEFORGE_DATABASE_URL", None)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    if tracking_uri is not None:
        env["TRADEFORGE_MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def run_worker(kind: str, options: list[str], folder: Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh process of this script; returns the JSON document it prints."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--checkout", str(REPO), *options]
    done = subprocess.run(command, cwd=folder, env=child_env(folder, tracking_uri), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-6000:])
        raise SystemExit(f"the {kind} measurement failed (exit {done.returncode})")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def check_checkout(folder: Path) -> None:
    """Refuse to measure if a subprocess would import another checkout's code than this one."""
    probe = "import json, pipeline, runtime, tradeforge_cli; print(json.dumps([pipeline.__file__, " \
            "runtime.__file__, tradeforge_cli.__file__]))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=folder, env=child_env(folder), capture_output=True,
                          text=True, check=True)
    paths = [Path(p).resolve() for p in json.loads(done.stdout)]
    wrong = [str(p) for p in paths if REPO not in p.parents]
    if wrong:
        raise SystemExit(f"a subprocess imports {', '.join(wrong)}, not the code of {REPO}")



# ---------------------------------------------------------------------------------------------- the parts
def latency(data: Path, folder: Path, sizes: list[int], bars: int, budget: float, say: Any) -> dict[str, Any]:
    tracking_uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    say("latency: training the LSTM (hidden 64, seq 64, 1 epoch, 1 walk-forward fold) and registering it ...")
    setup = run_worker("setup", ["--sizes", ",".join(map(str, sizes)), "--bars", str(bars), "--data", str(data)],
                       folder / "setup", tracking_uri)
    say(f"latency: {setup['model']} in production after {setup['train_seconds']:.1f} s")
    rows = []
    for size in sizes:
        options = ["--size", str(size), "--bars", str(bars), "--budget", str(budget), "--data", str(data),
                   "--start", setup["starts"][str(size)]]
        row = run_worker("latency", options, folder / f"latency-{size}", tracking_uri)
        say(f"latency: {size:>7,} bars of history: {row['bars']} bars measured, p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms, max {row['max_ms']:.2f} ms, RSS {row['rss_mb']:.0f} MB "
            f"(first bars after start, not counted: {', '.join(f'{v:.0f}' for v in row['first_bars_ms'])} ms)")
        rows.append(row)
    return {"model": setup["model"], "train_seconds": setup["train_seconds"], "sizes": rows}


def replay(data: Path, folder: Path, runs: int, say: Any) -> dict[str, Any]:
    inside = run_worker("replay", ["--data", str(data)], folder / "replay-in-process")
    say(f"replay in process: {inside['bars']:,} bars, {inside['fills']:,} fills, {inside['trades']:,} trades in "
        f"{inside['seconds']:.2f} s = {inside['bars_per_s']:,.0f} bars/s")
    import yaml

    portfolio = folder / "portfolio.yaml"
    portfolio.write_text(yaml.safe_dump(TWO_SLEEVES, sort_keys=False))
    cli = Path(sys.executable).parent / "tradeforge"
    command = [str(cli) if cli.exists() else sys.executable, *([] if cli.exists() else ["-m", "tradeforge_cli"]),
               "runtime", "--mode", "paper", "--feed", "replay", "--data", str(data), "--speed", "max",
               "--portfolio", str(portfolio), "--fresh", "--json"]
    timings, peaks, bars = [], [], 0
    for number in range(runs):
        where = folder / f"replay-cli-{number}"
        where.mkdir(parents=True)
        with open(where / "stdout", "w+b") as out, open(where / "stderr", "w+b") as err:
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=where, env=child_env(where), stdout=out, stderr=err)
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            if process.returncode != 0:
                sys.stderr.write(err.read().decode(errors="replace")[-6000:])
                raise SystemExit(f"tradeforge runtime failed (exit {process.returncode})")
            document = json.loads(out.read().decode())
        bars = int(document["bars"])
        timings.append(seconds)
        peaks.append(usage.ru_maxrss * 1024 / MB)  # a child's peak starts at its parent's size: this one is small
        say(f"replay whole process, run {number + 1}/{runs}: {bars:,} bars in {seconds:.2f} s = "
            f"{bars / seconds:,.0f} bars/s, peak RSS {peaks[-1]:.0f} MB")
    median = statistics.median(timings)
    return {"in_process": inside,
            "whole_process": {"command": " ".join(command), "bars": bars, "runs": timings,
                              "median_seconds": median, "bars_per_s": bars / median,
                              "peak_rss_mb": statistics.median(peaks)}}


def verdicts(result: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, target, met) rows of the summary table."""
    rows: list[tuple[str, str, str, bool | None]] = []
    if "latency" in result:
        sizes = result["latency"]["sizes"]
        for row in sizes:
            rows.append((f"p50 / p99 at {row['size']:,} bars of history ({row['bars']} bars)",
                         f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f} ms", f"p99 <= {P99_TARGET_MS:g} ms",
                         row["p99_ms"] <= P99_TARGET_MS))
        small, large = sizes[0], sizes[-1]
        if len(sizes) > 1:
            ratio = large["p99_ms"] / small["p99_ms"]
            rows.append((f"p99 at {large['size']:,} / p99 at {small['size']:,}", f"{ratio:.2f}x",
                         f"<= {P99_GROWTH_TARGET:g}x", ratio <= P99_GROWTH_TARGET))
        common = min(row["bars"] for row in sizes)  # memory is compared after as many bars at every size
        for row in sizes:
            rows.append((f"RSS after {common} bars at {row['size']:,} bars of history",
                         f"{row['rss_trace_mb'][common - 1]:.0f} MB", "", None))
        if len(sizes) > 1:
            growth = large["rss_trace_mb"][common - 1] - small["rss_trace_mb"][common - 1]
            rows.append((f"RSS at {large['size']:,} - RSS at {small['size']:,}", f"{growth:+.0f} MB",
                         f"<= {RSS_GROWTH_TARGET_MB:g} MB", growth <= RSS_GROWTH_TARGET_MB))
    if "replay" in result:
        inside, whole = result["replay"]["in_process"], result["replay"]["whole_process"]
        rows.append(("replay in process (Node.run)", f"{inside['bars_per_s']:,.0f} bars/s", "", None))
        rows.append((f"replay whole process (tradeforge runtime, median of {len(whole['runs'])})",
                     f"{whole['bars_per_s']:,.0f} bars/s", f">= {REPLAY_TARGET:,.0f} bars/s",
                     whole["bars_per_s"] >= REPLAY_TARGET))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", choices=["latency", "replay"], help="run one part only")
    parser.add_argument("--sizes", default="1000,10000,100000", help="bars of history before the measured bars")
    parser.add_argument("--bars", type=int, default=300, help="bars measured per size (at most)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help=f"seconds of measured time per size after which it stops (at least {MIN_BARS} bars)")
    parser.add_argument("--runs", type=int, default=3, help="whole-process replay runs (the median is reported)")
    parser.add_argument("--data", help=f"the {DATA_NAME} file (default: shared/data beside the repository)")
    parser.add_argument("--checkout", help="measure the code of this checkout (default: the one holding this file)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global REPO
    REPO = Path(args.checkout).resolve() if args.checkout else REPO
    sys.path.insert(0, str(REPO))
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    if not sizes or min(sizes) <= WARMUP_BARS or args.bars < MIN_BARS or args.runs < 1:
        parser.error(f"give sizes above {WARMUP_BARS}, --bars of at least {MIN_BARS} and --runs of at least 1")
    data = find_data(args.data)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    result: dict[str, Any] = {"checkout": str(REPO), "data": str(data), "cores": os.cpu_count(),
                              "load_average_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="tradeforge-bench-") as temporary:
        folder = Path(temporary)
        check_checkout(folder)
        say(f"measuring the code of {REPO} on {data}")
        say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start "
            "(other work on the cores shows as noise in every figure)")
        if args.only in (None, "latency"):
            result["latency"] = latency(data, folder, sizes, args.bars, args.budget, say)
        if args.only in (None, "replay"):
            result["replay"] = replay(data, folder, args.runs, say)
    result["load_average_at_end"] = os.getloadavg()[0]
    rows = verdicts(result)
    result["targets"] = [{"what": w, "measured": m, "target": t, "pass": p} for w, m, t, p in rows]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    width = max(len(w) for w, *_ in rows)
    print(f"\n{'':{width}}  {'measured':>22}  {'target':>22}  verdict")
    for what, measured, target, met in rows:
        verdict = "" if met is None else "pass" if met else "FAIL"
        print(f"{what:{width}}  {measured:>22}  {target:>22}  {verdict}")


if __name__ == "__main__":
    main()
