"""Batched refits per second on whatever JAX device this process sees (GPU, or CPU).

Times ``models.batch.BatchSampler`` (the power engine's ``batch`` backend) fitting many
simulated trials at once, for several batch sizes, on the device JAX picks (``jax.devices()``;
set ``JAX_PLATFORMS=cpu`` to force the CPU). For each ``n`` of the plan and each batch size:

1. the engine's trials of the plan's ``alternative`` scenario at ``n`` (``TrialGenerator`` and
   ``replicate_seeds``, as ``refit_paths.draw_trials`` draws them) and the plan's Bayesian
   analysis model (``BayesianAnalysis``: model, data, gate thresholds and sampler settings,
   4 chains x 1000 draws for ``cross_sectional.toml``), with only ``batch_size`` changed;
2. an untimed warm-up on a batch of warm-up trials (replicates that no timed part fits):
   one call of each batch program (``hmc``, ``extend``, ``nuts``; ``refit_paths.
   compile_retry_programs``), so that no compilation falls into the timed part
   (``--no-compile-retries``: one ``fit`` call instead, compiling what it needs);
3. one timed ``BatchSampler.fit`` over ``--datasets`` trials: gated fits with the package's
   retries, the draws brought back to the host and the gate computed there, as the engine
   does (the decision rows of ``BayesianAnalysis.analyse_batch`` are left out).

Columns: ``device``, ``n``, ``batch_size``, ``datasets``, ``seconds`` (the timed call),
``seconds_per_refit``, ``refits_per_s``, ``passed_gate`` (fits whose ``.passed`` is true),
``retried`` (fits that needed more than the first attempt) and ``warmup_s`` (the warm-up,
compilation and its sampling together). JAX's persistent compile cache
(``CD49D_JAX_CACHE``) is used as ``models.batch`` sets it; point it at an empty folder for
cold compile times.

    python benchmarks/batch_devices.py --help
    python benchmarks/batch_devices.py --ns 8 --batch-sizes 8 --datasets 8   # a smoke test
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

from bench_common import format_table, package_versions
from refit_paths import compile_retry_programs, draw_trials, warmup_trials

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PLAN = REPO_ROOT / "simulations" / "plans" / "cross_sectional.toml"
COLUMNS = [
    "device",
    "n",
    "batch_size",
    "datasets",
    "seconds",
    "seconds_per_refit",
    "refits_per_s",
    "passed_gate",
    "retried",
    "warmup_s",
]
VERSIONS = ("jax", "jaxlib", "blackjax", "pymc", "pytensor", "numpy", "scipy", "pandas")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--plan", type=Path, default=DEFAULT_PLAN, help="power plan (default: cross_sectional)"
    )
    parser.add_argument(
        "--ns", type=int, nargs="+", default=[8, 32], help="designs n (default: 8 32)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[8, 64, 256],
        help="datasets per compiled call (default: 8 64 256)",
    )
    parser.add_argument(
        "--datasets",
        type=int,
        default=None,
        help="timed trials per (n, batch size); default 2 x the largest batch size, at least 64",
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="at most this many batches per batch size (fewer timed trials for small sizes)",
    )
    parser.add_argument(
        "--draws", type=int, default=None, help="draws per chain (default: the plan's)"
    )
    parser.add_argument(
        "--no-compile-retries",
        dest="compile_retries",
        action="store_false",
        help="warm up with one fit call instead of one call of each batch program",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds after which no further (n, batch size) is started",
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    return parser.parse_args(argv)


def describe_runtime() -> str:
    """JAX's devices and backend, and the versions of the libraries the batch path uses."""
    import jax

    versions = package_versions(VERSIONS)
    return "\n".join(
        [
            f"jax.devices(): {jax.devices()}",
            f"default backend: {jax.default_backend()}",
            "versions: " + ", ".join(versions),
        ]
    )


def device_label() -> str:
    """The first JAX device as ``platform:kind`` (e.g. ``gpu:NVIDIA H100 80GB HBM3``)."""
    import jax

    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def time_design(plan, n: int, batch_sizes: list[int], datasets: int, args, started: float):
    """Rows of one design ``n``: one per batch size (those past the time budget skipped)."""
    from models.batch import BatchSampler
    from models.data import Cohort
    from models.registry import MODELS
    from simulations.bayes import BayesianAnalysis

    stage = time.perf_counter()
    trials = draw_trials(plan, n, range(datasets))
    print(f"n={n}: {datasets} trials drawn in {time.perf_counter() - stage:.1f} s", flush=True)
    stage = time.perf_counter()
    analysis = BayesianAnalysis(plan, trials[0].dataset)
    rules = plan.analysis.bayesian
    cohort = Cohort.from_frame(trials[0].dataset, analysis.spec, source="simulated trial")
    model = MODELS[plan.bayes_model].build(cohort, rules.priors)  # as BayesianAnalysis does
    data = [analysis.data_of(t.dataset) for t in trials]
    seeds = [t.seed_analysis for t in trials]
    print(f"n={n}: analysis and model built in {time.perf_counter() - stage:.1f} s", flush=True)
    rows = []
    for size in batch_sizes:
        if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
            print(f"n={n} batch_size={size}: skipped (time budget spent)", flush=True)
            continue
        settings = replace(analysis.sampler.settings, batch_size=size)
        if args.draws is not None:
            settings = replace(settings, draws=args.draws)
        warm_started = time.perf_counter()
        sampler = BatchSampler(model, analysis.data_names(), settings, analysis.thresholds)
        warm = warmup_trials(plan, n, size)
        warm_data = [analysis.data_of(t.dataset) for t in warm]
        if args.compile_retries:
            compile_retry_programs(sampler, warm, warm_data)
        else:
            sampler.fit(warm_data, [t.seed_analysis for t in warm])
        warmup_s = time.perf_counter() - warm_started
        print(f"n={n} batch_size={size}: warm-up {warmup_s:.1f} s", flush=True)
        timed_started = time.perf_counter()
        count = len(data) if args.max_batches is None else min(len(data), args.max_batches * size)
        fits = sampler.fit(data[:count], seeds[:count])
        seconds = time.perf_counter() - timed_started
        row = {
            "device": device_label(),
            "n": n,
            "batch_size": size,
            "datasets": len(fits),
            "seconds": seconds,
            "seconds_per_refit": seconds / len(fits),
            "refits_per_s": len(fits) / seconds,
            "passed_gate": sum(fit.passed for fit in fits),
            "retried": sum(len(fit.attempts) > 1 for fit in fits),
            "warmup_s": warmup_s,
        }
        print(format_table([row], COLUMNS), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    from simulations.plan import load_plan

    print(describe_runtime(), flush=True)
    plan = load_plan(args.plan)
    batch_sizes = args.batch_sizes
    datasets = args.datasets or max(64, 2 * max(batch_sizes))
    rows = []
    for n in args.ns:
        rows += time_design(plan, n, batch_sizes, datasets, args, started)
    if rows:
        print("\n" + format_table(rows, COLUMNS), flush=True)
    print(f"\ntotal {time.perf_counter() - started:.1f} s", flush=True)
    if args.csv is not None and rows:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
