"""Side-by-side speed and quality of the NUTS samplers PyMC drives, on every model of the package.

For each (model, sampler) pair this measures, on the bundled cohort:

- ``wall_s``: seconds from building the model to having the posterior, so it includes model
  construction, compilation (PyTensor C for ``pymc``, Numba for ``nutpie``, JAX/XLA for
  ``numpyro``), tuning and drawing. Loading the cohort CSV and importing libraries are excluded.
- ``divergences``: divergent transitions after tuning, summed over chains.
- ``ess_bulk_min`` / ``ess_tail_min``: the smallest bulk / tail ESS over every scalar element of
  every posterior variable (constant deterministics, which have no ESS, are left out as in the
  diagnostic gate of ``models.diagnostics.check``).
- ``rhat_max``: the largest rank-normalised split R-hat over the same elements.
- ``ess_per_s``: ``min(ess_bulk_min, ess_tail_min) / wall_s``, the figure of merit.

Each pair runs in a fresh Python subprocess (this script re-invoked with ``--one``), so no
compilation cache held in memory by an earlier pair helps a later one. PyTensor also caches
compiled C and Numba code on disk (``~/.pytensor``), which JAX does not; by default each pair
therefore gets its own empty PyTensor cache directory, so every sampler compiles from scratch
(``--warm-cache`` keeps the user's cache instead). A pair that raises, crashes or runs past
``--timeout`` becomes an error row instead of stopping the run.

All samplers get the same draws, tuning steps, chains, seed and ``target_accept`` (0.9, the
``SamplerSettings`` default). ``pymc`` and ``nutpie`` run on ``--cores`` cores; numpyro ignores
``cores`` and, through PyMC (which sets many virtual XLA host devices), runs all chains in parallel
with ``jax.pmap`` on however many cores the machine has. The table is printed
and written to CSV; the run ends by naming, per model, the fastest correct sampler: the highest
``ess_per_s`` among runs with no divergences and R-hat <= 1.01.

Run from the repository root::

    .venv/bin/python benchmarks/fit_backends.py --help
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COHORT = REPO_ROOT / "data" / "kimura2016_simulated.csv"
DEFAULT_OUT = Path("results") / "benchmarks" / "fit_backends.csv"
DEFAULT_SAMPLERS = ("pymc", "nutpie", "numpyro")
MODEL_NAMES = ("positive_rate", "saturation", "saturation_per_subset", "exacerbation")
RHAT_LIMIT = 1.01
CELL_FORMATS = {
    "wall_s": "{:.1f}",
    "ess_bulk_min": "{:.0f}",
    "ess_tail_min": "{:.0f}",
    "rhat_max": "{:.4f}",
    "ess_per_s": "{:.1f}",
    "subprocess_s": "{:.1f}",
}
RESULT_PREFIX = "FIT_BACKENDS_RESULT "
COLUMNS = (
    "model",
    "sampler",
    "wall_s",
    "divergences",
    "ess_bulk_min",
    "ess_tail_min",
    "rhat_max",
    "ess_per_s",
    "correct",
    "subprocess_s",
    "error_type",
    "error_message",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; see ``--help``."""
    parser = argparse.ArgumentParser(
        description="Time PyMC's NUTS, nutpie and numpyro on each model (compilation included) "
        "and compare minimum ESS per second. Each (model, sampler) pair runs in a fresh "
        "subprocess.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_NAMES,
        default=list(MODEL_NAMES),
        metavar="MODEL",
        help=f"models to fit, of: {', '.join(MODEL_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--samplers",
        nargs="+",
        choices=DEFAULT_SAMPLERS,
        default=list(DEFAULT_SAMPLERS),
        metavar="SAMPLER",
        help=f"samplers to compare (default: {' '.join(DEFAULT_SAMPLERS)})",
    )
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain (default: 1000)")
    parser.add_argument(
        "--tune", type=int, default=1000, help="tuning steps per chain (default: 1000)"
    )
    parser.add_argument("--chains", type=int, default=4, help="chains (default: 4)")
    parser.add_argument(
        "--cores",
        type=int,
        default=2,
        help="cores for pymc and nutpie (default: 2); numpyro runs all chains "
        "in parallel through JAX whatever this is",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument(
        "--cohort",
        type=Path,
        default=DEFAULT_COHORT,
        help="cohort CSV (default: the bundled simulated cohort)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="CSV to write the table to (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds before a pair is stopped and recorded as an error (default: 1800)",
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="let pairs use PyTensor's on-disk compile cache (~/.pytensor, which also holds "
        "PyTensor's Numba cache); by default each pair gets an empty one, so pymc and nutpie "
        "compile from scratch as numpyro (JAX keeps no disk cache) always does",
    )
    parser.add_argument(
        "--one", nargs=2, metavar=("MODEL", "SAMPLER"), help=argparse.SUPPRESS
    )  # internal: measure one pair, print one JSON line
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Child process: one (model, sampler) pair
# ---------------------------------------------------------------------------------------------


def measure_pair(model_name: str, sampler: str, args: argparse.Namespace) -> dict:
    """Build, sample and summarise one pair in this process.

    Parameters
    ----------
    model_name, sampler
        A key of ``models.registry.MODELS`` and a sampler of ``models.fit.SAMPLERS``.
    args
        The parsed options (draws, tune, chains, cores, seed, cohort).

    Returns
    -------
    dict
        ``wall_s`` and the diagnostics summary (see ``summarise_fit``).
    """
    from models.data import load_cohort
    from models.fit import SamplerSettings, sample_posterior
    from models.registry import MODELS

    cohort = load_cohort(args.cohort)
    settings = SamplerSettings(
        sampler=sampler, draws=args.draws, tune=args.tune, chains=args.chains, cores=args.cores
    )
    start = time.perf_counter()
    model = MODELS[model_name].build(cohort)
    idata = sample_posterior(model, settings, seed=args.seed)
    wall_s = time.perf_counter() - start
    return {"wall_s": wall_s, **summarise_fit(idata)}


def summarise_fit(idata) -> dict:
    """Divergences, minimum bulk and tail ESS and maximum R-hat of a fit.

    Constant deterministics are dropped first (they have no R-hat or ESS), as the diagnostic gate
    does. A NaN diagnostic of a varying parameter propagates, so the run cannot count as correct.
    """
    from models.diagnostics import is_constant, parameter_table

    posterior = idata["posterior"].to_dataset()
    varying = [name for name in posterior.data_vars if not is_constant(posterior[name])]
    table = parameter_table(posterior[varying])
    return {
        "divergences": int(idata["sample_stats"]["diverging"].sum()),
        "ess_bulk_min": float(table["ess_bulk"].min(skipna=False)),
        "ess_tail_min": float(table["ess_tail"].min(skipna=False)),
        "rhat_max": float(table["rhat"].max(skipna=False)),
    }


def run_one_and_print(model_name: str, sampler: str, args: argparse.Namespace) -> None:
    """Child entry point: print one prefixed JSON line, a result or the exception raised."""
    try:
        row = measure_pair(model_name, sampler, args)
    except Exception as error:  # recorded as an error row by the parent
        traceback.print_exc(file=sys.stderr)
        row = {"error_type": type(error).__name__, "error_message": str(error)}
    print(RESULT_PREFIX + json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent process: every pair, then the table
# ---------------------------------------------------------------------------------------------


def child_command(model_name: str, sampler: str, args: argparse.Namespace) -> list[str]:
    """The command that measures one pair in a fresh interpreter."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        model_name,
        sampler,
        "--draws",
        str(args.draws),
        "--tune",
        str(args.tune),
        "--chains",
        str(args.chains),
        "--cores",
        str(args.cores),
        "--seed",
        str(args.seed),
        "--cohort",
        str(args.cohort.resolve()),
    ]


def child_environment(compiledir: str | None) -> dict[str, str]:
    """This process's environment, with PyTensor's compile cache moved to ``compiledir`` if given.

    PyTensor keeps its C and Numba compile caches under ``base_compiledir`` across processes, so a
    fresh subprocess alone does not make pymc and nutpie compile from scratch; an empty
    ``base_compiledir`` does.
    """
    env = dict(os.environ)
    if compiledir is not None:
        flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f]
        env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={compiledir}"])
    return env


def run_pair_in_subprocess(model_name: str, sampler: str, args: argparse.Namespace) -> dict:
    """Measure one pair in a subprocess; a crash, timeout or exception gives an error row."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fit_backends_pytensor_") as compiledir:
        try:
            completed = subprocess.run(
                child_command(model_name, sampler, args),
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=False,
                cwd=REPO_ROOT,
                env=child_environment(None if args.warm_cache else compiledir),
            )
        except subprocess.TimeoutExpired:
            result = {
                "error_type": "TimeoutExpired",
                "error_message": f"no result within --timeout {args.timeout:g} s",
            }
        else:
            result = parse_child_output(completed)
    result["subprocess_s"] = time.perf_counter() - start
    return complete_row(model_name, sampler, result)


def parse_child_output(completed: subprocess.CompletedProcess) -> dict:
    """The child's result line, or an error naming its exit status and last stderr line."""
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line.removeprefix(RESULT_PREFIX))
    stderr_lines = completed.stderr.strip().splitlines()
    last = stderr_lines[-1] if stderr_lines else "(no stderr)"
    return {
        "error_type": "ChildProcessError",
        "error_message": f"exit status {completed.returncode}: {last}",
    }


def complete_row(model_name: str, sampler: str, result: dict) -> dict:
    """A full table row: derived ESS per second and correctness, blanks for what is missing."""
    row = {column: None for column in COLUMNS} | result | {"model": model_name, "sampler": sampler}
    if row["error_type"] is None:
        row["ess_per_s"] = min(row["ess_bulk_min"], row["ess_tail_min"]) / row["wall_s"]
        row["correct"] = is_correct(row)
    else:
        row["correct"] = False
    return row


def is_correct(row: dict) -> bool:
    """No error, no divergences and R-hat <= 1.01 (a NaN R-hat fails)."""
    return (
        row["error_type"] is None
        and row["divergences"] == 0
        and not math.isnan(row["rhat_max"])
        and row["rhat_max"] <= RHAT_LIMIT
    )


def fastest_correct(rows: list[dict], model_name: str) -> dict | None:
    """The correct row of a model with the highest ESS per second, or None if none is correct."""
    candidates = [r for r in rows if r["model"] == model_name and r["correct"]]
    return max(candidates, key=lambda r: r["ess_per_s"], default=None)


def format_cell(column: str, value) -> str:
    """Table text: each column's precision, booleans as yes/no, missing values as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-" if value is None else "nan"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return CELL_FORMATS.get(column, "{}").format(value)


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of the measured columns (error messages listed separately)."""
    columns = [c for c in COLUMNS if c != "error_message"]
    cells = [[format_cell(c, row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def write_csv(rows: list[dict], path: Path) -> None:
    """Write every column of every row, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def report(rows: list[dict], models: list[str], out: Path) -> None:
    """Print the table, the error rows, the CSV path and the fastest correct sampler per model."""
    print()
    print(format_table(rows))
    for row in rows:
        if row["error_type"] is not None:
            print(
                f"ERROR {row['model']} / {row['sampler']}: {row['error_type']}: "
                f"{row['error_message']}"
            )
    print(f"\nTable written to {out}")
    print(
        f"\nFastest correct sampler per model (highest ess_per_s with 0 divergences and "
        f"R-hat <= {RHAT_LIMIT}):"
    )
    for model_name in models:
        best = fastest_correct(rows, model_name)
        verdict = (
            f"{best['sampler']} ({best['ess_per_s']:.1f} ESS/s, {best['wall_s']:.1f} s)"
            if best
            else "none (no run was correct)"
        )
        print(f"  {model_name}: {verdict}")


def main(argv: list[str] | None = None) -> None:
    """Parse options; measure one pair (``--one``) or every pair and report."""
    args = parse_args(argv)
    if args.one:
        run_one_and_print(*args.one, args)
        return
    rows = []
    for model_name in args.models:
        for sampler in args.samplers:
            print(f"{model_name} / {sampler} ...", end=" ", flush=True)
            row = run_pair_in_subprocess(model_name, sampler, args)
            status = row["error_type"] or f"{row['wall_s']:.1f} s, {row['ess_per_s']:.1f} ESS/s"
            print(status, flush=True)
            rows.append(row)
    write_csv(rows, args.out)
    report(rows, args.models, args.out)


if __name__ == "__main__":
    main()
