"""Bayesian refits per second of the power engine: batch (JAX) vs nutpie vs a naive loop.

What is measured. The plan's Bayesian analysis (``plan.bayes_model``, default
``simulations/plans/cross_sectional.toml``: ``positive_rate``, 4 chains x 1000 draws) refitted
to simulated trials of the ``alternative`` scenario at each ``--n`` (natalizumab-treated
patients), drawn by ``simulations.trials.TrialGenerator`` with the engine's own seeds
(``simulations.seeds.replicate_seeds``: replicate ``k`` has one data seed, which draws its
trial, and one analysis seed, which every path uses). Every path fits the same trials
(replicates 0, 1, ...; the naive path only the first ``--naive-replicates``):

- ``naive``: per trial, build the model and ``pm.sample`` with PyMC's defaults (its own NUTS,
  2 chains on 2 cores here, 1000 draws after 1000 tuning steps, ``random_seed`` = the analysis
  seed), then the gate (``models.diagnostics.check``); every refit compiles its model;
- ``nutpie``: ``BayesianAnalysis`` with backend ``nutpie`` (compiled once; the plan's chains and
  draws, nutpie's 1000 tuning steps and ``target_accept`` 0.9, one resample at 0.97 on a failed
  gate), ``analyse_batch`` over all trials, one nutpie call each;
- ``batch_1proc``: ``BayesianAnalysis`` with backend ``batch`` (``models.batch``: compiled once,
  every trial of the call fitted in vectorised batches, each gated, failures extended and then
  refitted with NUTS), one ``analyse_batch`` call over all trials, in a process pinned to one
  core;
- ``vnuts_1proc``: for comparison, the same compiled batch sampler with vectorised NUTS as its
  only attempt (what ``models.batch`` did not choose), one core;
- ``batch_2proc``: the same trials over ``--processes`` spawned worker processes, as the
  engine runs them (``ProcessPoolExecutor``, spawn); each worker compiles and warms up, the
  workers wait at a barrier, then each takes batches from a shared counter until none is left
  (as the pool hands out the engine's tasks), and the wall time runs from the first worker's
  start to the last worker's end (``refits_per_s`` = all refits / that time).

A refit's time runs from the trial (a data frame) to its decision rows (batch, nutpie) or gated
posterior (naive); drawing the trials is not timed. The compiled paths' one-off cost is
``compile_s`` (see ``refit_paths``: building the analysis and a first call on warm-up trials,
so an upper bound); the naive path refits one warm-up trial untimed first. Each (path, n) runs
in its own child process with empty PyTensor and JAX compile caches (``--warm-cache`` keeps
the user's). ``passed_gate`` counts trials whose fit passed the gate (after the path's own
retries); a path that fails the gate more often is not faster.

Targets (printed with a verdict): batch refits per second at least 100 times the naive loop's
at n = 8, and the gate passed on at least 99% of the batch fits. The speed verdict uses the
batch run over ``--processes`` workers (naive and nutpie use both cores too) and also states
the one-process figure.

Sections (each in its own child process, after the table): ``--check`` (long batch and nutpie
fits of the same trials, estimand tables compared), ``--power-check`` (power of
``bayes_direction`` by both backends on the same trials) and ``--curve`` (a 4000-refit
Bayesian power curve through ``simulations.power.run_plan``); see ``batch_checks``.

Run from the repository root::

    .venv/bin/python benchmarks/power_throughput.py --help
    .venv/bin/python benchmarks/power_throughput.py                 # the table at n = 8 and 32
    .venv/bin/python benchmarks/power_throughput.py --check --power-check --curve
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import (
    REPO_ROOT,
    cache_environment,
    format_table,
    machine_facts,
    parse_result,
    print_result,
    run_child,
    write_csv,
)

DEFAULT_PLAN = REPO_ROOT / "simulations" / "plans" / "cross_sectional.toml"
DEFAULT_OUT = Path("results") / "benchmarks" / "power_throughput.csv"
SECTIONS = ("check", "power-check", "curve")
TARGET_SPEEDUP = 100.0
TARGET_SPEEDUP_N = 8
TARGET_PASS_SHARE = 0.99
COLUMNS = [
    "n",
    "path",
    "replicates",
    "draws_per_refit",
    "total_s",
    "seconds_per_refit",
    "refits_per_s",
    "compile_s",
    "passed_gate",
    "retried",
    "final_attempts",
    "error_type",
    "error_message",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; see ``--help``."""
    parser = argparse.ArgumentParser(
        description="Bayesian refits per second: the batch (JAX) backend, the nutpie backend "
        "and a naive pm.sample loop on the same simulated trials, plus optional correctness "
        "and scale checks.",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        default=DEFAULT_PLAN,
        help="plan TOML (default: simulations/plans/cross_sectional.toml)",
    )
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[8, 32],
        help="treated patients per trial (default: 8 32)",
    )
    parser.add_argument(
        "--naive-replicates", type=int, default=6, help="trials for the naive loop (default: 6)"
    )
    parser.add_argument(
        "--batch-replicates",
        type=int,
        nargs="+",
        default=None,
        help="trials for the batch paths: one value, or one per --n "
        "(default: 128 at n <= 8, else 32)",
    )
    parser.add_argument(
        "--nutpie-replicates",
        type=int,
        nargs="+",
        default=None,
        help="trials for the nutpie path: one value, or one per --n "
        "(default: 64 at n <= 8, else 32)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="worker processes of the multi-process batch run (default: 2)",
    )
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive loop")
    parser.add_argument("--no-table", action="store_true", help="run only the sections asked for")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="keep the user's PyTensor and JAX compile caches "
        "(default: each child process gets empty ones)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="CSV of the table (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds per child process (default: 3600)"
    )
    add_section_options(parser.add_argument_group("sections"))
    # internal: a child process measures one path, or runs one section
    parser.add_argument(
        "--one", nargs=3, metavar=("PATH", "N", "REPLICATES"), help=argparse.SUPPRESS
    )
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def add_section_options(checks) -> None:
    """Options of ``--check``, ``--power-check`` and ``--curve``."""
    checks.add_argument(
        "--check",
        action="store_true",
        help="long batch vs nutpie fits of the same trials: estimand differences",
    )
    checks.add_argument("--check-n", type=int, default=8, help="n of --check (default: 8)")
    checks.add_argument(
        "--check-datasets", type=int, default=20, help="trials of --check (default: 20)"
    )
    checks.add_argument(
        "--check-draws", type=int, default=25000, help="draws per chain of --check (default: 25000)"
    )
    checks.add_argument(
        "--power-check",
        action="store_true",
        help="bayes_direction power by both backends on the same trials",
    )
    checks.add_argument(
        "--power-check-n",
        type=int,
        nargs="+",
        default=[8, 16, 32],
        help="n of --power-check (default: 8 16 32)",
    )
    checks.add_argument(
        "--power-check-replicates",
        type=int,
        default=200,
        help="trials per n of --power-check (default: 200)",
    )
    checks.add_argument(
        "--curve", action="store_true", help="time a Bayesian-only power curve through run_plan"
    )
    checks.add_argument(
        "--curve-n",
        type=int,
        nargs="+",
        default=[4, 6, 8, 12, 16, 24, 32, 48],
        help="n of --curve (default: 4 6 8 12 16 24 32 48)",
    )
    checks.add_argument(
        "--curve-replicates",
        type=int,
        default=500,
        help="replicates per n of --curve (default: 500)",
    )
    checks.add_argument(
        "--curve-per-task",
        type=int,
        default=50,
        help="replicates per task of --curve (default: 50)",
    )
    checks.add_argument(
        "--curve-workers", type=int, default=2, help="worker processes of --curve (default: 2)"
    )


def per_n(values: list[int] | None, sizes: list[int], default) -> dict[int, int]:
    """One count per ``n``: a single value for all, one value per ``n``, or ``default(n)``."""
    if values is None:
        return {n: default(n) for n in sizes}
    if len(values) == 1:
        return dict.fromkeys(sizes, values[0])
    if len(values) != len(sizes):
        raise SystemExit(f"give one replicate count, or one per --n ({len(sizes)}), not {values}")
    return dict(zip(sizes, values, strict=True))


def default_batch_replicates(n: int) -> int:
    return 128 if n <= 8 else 32


def default_nutpie_replicates(n: int) -> int:
    return 64 if n <= 8 else 32


def planned_runs(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(path, n, replicates) for every child of the table, in the order they run."""
    batch = per_n(args.batch_replicates, args.n, default_batch_replicates)
    nutpie = per_n(args.nutpie_replicates, args.n, default_nutpie_replicates)
    runs = []
    for n in args.n:
        if not args.skip_naive:
            runs.append(("naive", n, args.naive_replicates))
        runs.append(("nutpie", n, nutpie[n]))
        runs.append(("batch_1proc", n, batch[n]))
        runs.append(("vnuts_1proc", n, batch[n]))
        runs.append((f"batch_{args.processes}proc", n, batch[n]))
    return runs


# --- parent: children, the table, the verdicts ----------------------------------------------


def child_run(argv: list[str], extra: list[str], args: argparse.Namespace, *, capture: bool):
    """Run this script again with ``extra`` options, with empty compile caches unless
    ``--warm-cache``; returns the completed process, or None if it ran past ``--timeout``."""
    script = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="power_throughput_cache_") as cache:
        env = cache_environment(None if args.warm_cache else Path(cache))
        try:
            return run_child(
                [script, *argv, *extra], env=env, timeout=args.timeout, capture=capture
            )
        except subprocess.TimeoutExpired:
            return None


def measure_in_child(argv: list[str], args, path: str, n: int, replicates: int) -> dict:
    """One (path, n) measured in a fresh child process; a failure becomes an error result."""
    completed = child_run(argv, ["--one", path, str(n), str(replicates)], args, capture=True)
    if completed is None:
        return {
            "path": path,
            "n": n,
            "error_type": "TimeoutExpired",
            "error_message": f"past --timeout {args.timeout:g} s",
        }
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-3000:])
    return {**parse_result(completed), "path": path, "n": n}


def table_row(result: dict) -> dict:
    """The printed and stored row of one (path, n) result."""
    if result.get("error_type"):
        return {c: result.get(c) for c in COLUMNS}
    replicates, total_s = result["replicates"], result["total_s"]
    attempts = result["final_attempts"]
    return {
        "n": result["n"],
        "path": result["path"],
        "replicates": replicates,
        "draws_per_refit": result["draws_per_refit"],
        "total_s": total_s,
        "seconds_per_refit": total_s / replicates,
        "refits_per_s": replicates / total_s,
        "compile_s": result["compile_s"],
        "passed_gate": f"{result['statuses'].get('ok', 0)}/{replicates}",
        "retried": result["retried"] if attempts else None,
        "final_attempts": ", ".join(f"{k} {v}" for k, v in most_common_first(attempts)) or None,
        "error_type": None,
        "error_message": None,
    }


def most_common_first(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def rate(rows: list[dict], path: str, n: int) -> float | None:
    """Refits per second of a path at ``n``, or None if it was not measured or failed."""
    for row in rows:
        if row["path"] == path and row["n"] == n and row["refits_per_s"] is not None:
            return row["refits_per_s"]
    return None


def ratio_lines(rows: list[dict], sizes: list[int], processes: int) -> list[str]:
    """Batch over naive and batch over nutpie refits per second, at each n."""
    lines = []
    for n in sizes:
        for batch in ("batch_1proc", f"batch_{processes}proc"):
            for other in ("naive", "nutpie"):
                mine, theirs = rate(rows, batch, n), rate(rows, other, n)
                value = f"{mine / theirs:.1f}x" if mine and theirs else "not measured"
                lines.append(f"n = {n}: {batch} / {other} refits per second: {value}")
    return lines


def gate_share(results: list[dict]) -> tuple[int, int]:
    """Passed and total batch fits, each trial counted once (both batch runs fit the same
    trials with the same seeds, and a trial's fit does not depend on its batch)."""
    passed = total = 0
    for result in results:
        if result["path"] == "batch_1proc" and not result.get("error_type"):
            passed += result["statuses"].get("ok", 0)
            total += result["replicates"]
    return passed, total


def verdict_lines(rows: list[dict], results: list[dict], processes: int) -> list[str]:
    """Whether the speed and gate targets are met, stated with the figures behind them."""
    n, lines = TARGET_SPEEDUP_N, []
    naive = rate(rows, "naive", n)
    for batch in (f"batch_{processes}proc", "batch_1proc"):
        mine = rate(rows, batch, n)
        if naive and mine:
            speedup = mine / naive
            met = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
            lines.append(
                f"speed, {batch} / naive at n = {n}: {speedup:.1f}x "
                f"(target >= {TARGET_SPEEDUP:g}x): {met}"
            )
        else:
            lines.append(
                f"speed, {batch} / naive at n = {n}: not measured "
                f"(no naive or batch run at n = {n})"
            )
    passed, total = gate_share(results)
    if total:
        share = passed / total
        met = "met" if share >= TARGET_PASS_SHARE else "NOT met"
        lines.append(
            f"gate, batch fits passing: {passed}/{total} = {share:.1%} "
            f"(target >= {TARGET_PASS_SHARE:.0%}): {met}"
        )
    return lines


def detail_lines(results: list[dict]) -> list[str]:
    """Per-worker times, the naive warm-up and per-refit times, and gate failure notes."""
    lines = []
    for result in results:
        label = f"{result['path']} n = {result['n']}"
        if "worker_s" in result:
            workers = ", ".join(f"{s:.1f}" for s in result["worker_s"])
            compiles = ", ".join(f"{s:.1f}" for s in result["worker_compile_s"])
            batches = ", ".join(str(b) for b in result.get("worker_batches", []))
            lines.append(
                f"{label}: timed seconds per worker {workers}; compile_s per worker {compiles}; "
                f"batches per worker {batches}"
            )
        if "warmup_s" in result:
            per_refit = ", ".join(f"{s:.1f}" for s in result["per_refit_s"])
            lines.append(
                f"{label}: untimed warm-up refit {result['warmup_s']:.1f} s; "
                f"timed refits {per_refit} s"
            )
        lines += [f"{label}: gate: {note}" for note in result.get("notes", [])]
    return lines


def report_table(rows: list[dict], results: list[dict], args: argparse.Namespace) -> None:
    """Print the table, the details, the ratios and the target verdicts."""
    print("\nRefits (seconds from trial to gated result; compile_s: one-off, not in total_s):")
    print(format_table(rows, [c for c in COLUMNS if c != "error_message"]))
    for row in rows:
        if row["error_type"]:
            print(
                f"ERROR {row['path']} n = {row['n']}: {row['error_type']}: {row['error_message']}"
            )
    print()
    for line in detail_lines(results):
        print(line)
    print()
    for line in ratio_lines(rows, args.n, args.processes):
        print(line)
    print()
    for line in verdict_lines(rows, results, args.processes):
        print(line)
    print(f"\nTable written to {args.out}")


def run_table(argv: list[str], args: argparse.Namespace) -> None:
    """Measure every (path, n) in its own child process, then report and write the CSV."""
    results = []
    for path, n, replicates in planned_runs(args):
        print(f"{path} n = {n}, {replicates} trials ...", end=" ", flush=True)
        result = measure_in_child(argv, args, path, n, replicates)
        status = result.get("error_type") or f"{result['total_s']:.1f} s"
        print(status, flush=True)
        results.append(result)
    rows = [table_row(result) for result in results]
    write_csv(rows, args.out, COLUMNS)
    report_table(rows, results, args)


def run_sections(argv: list[str], args: argparse.Namespace) -> None:
    """Each section asked for, in its own child process printing its own report."""
    for section in SECTIONS:
        if getattr(args, section.replace("-", "_")):
            print(f"\n--{section} ...", flush=True)
            completed = child_run(argv, ["--section", section], args, capture=False)
            if completed is None or completed.returncode != 0:
                what = (
                    "ran past --timeout"
                    if completed is None
                    else f"exit status {completed.returncode}"
                )
                print(f"ERROR --{section}: {what}")


# --- child: one path, or one section ---------------------------------------------------------


def run_one(args: argparse.Namespace, plan) -> None:
    """Child: measure one (path, n) and print its result line."""
    from refit_paths import measure_path

    path, n, replicates = args.one[0], int(args.one[1]), int(args.one[2])
    print_result(measure_path(plan, path, n, replicates))


def run_section(args: argparse.Namespace, plan) -> None:
    """Child: run one section; it prints its own report."""
    import batch_checks

    if args.section == "check":
        batch_checks.posterior_check(
            plan, n=args.check_n, datasets=args.check_datasets, draws=args.check_draws
        )
    elif args.section == "power-check":
        batch_checks.power_check(
            plan, sizes=args.power_check_n, replicates=args.power_check_replicates
        )
    else:
        batch_checks.power_curve(
            plan,
            sizes=args.curve_n,
            replicates=args.curve_replicates,
            per_task=args.curve_per_task,
            workers=args.curve_workers,
        )


def main(argv: list[str] | None = None) -> None:
    """Parse options; in a child measure one path or run one section, else run them all."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from models.fit import quiet_sampling_logs
    from simulations.plan import load_plan

    quiet_sampling_logs()
    plan = load_plan(args.plan)
    if args.one:
        run_one(args, plan)
        return
    if args.section:
        run_section(args, plan)
        return
    print("load average at start:", ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"plan: {args.plan} (model {plan.bayes_model}, result hash {plan.result_hash()[:12]})")
    caches = "the user's" if args.warm_cache else "empty per child process"
    print(f"compile caches: {caches}")
    if not args.no_table:
        run_table(argv, args)
    run_sections(argv, args)
    print("\nMachine:")
    for line in machine_facts():
        print(f"  {line}")


if __name__ == "__main__":
    main()
