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

Section ``fit-command`` (after the samplers, or alone with ``--sections fit-command``): the real
command a user runs, ``cd49d fit data/kimura2016_simulated.csv --model positive_rate
--no-sensitivity --out TMPDIR``, in a subprocess (the ``cd49d`` entry point next to this
interpreter), timed from start to exit, so interpreter start, imports, compilation, sampling,
the predictive checks and writing the outputs all count. Its ``fit.nc`` is then opened with
``xarray.open_datatree`` and the minimum bulk ESS (``arviz.ess(..., method="bulk")``) taken over
every element of the cell means and SDs (``cell_mean_logit``, ``tau_subject``,
``tau_subject_subset``). The figure of merit, that ESS per wall-second, is printed beside the
references brms 2.18 / Stan (17.6: 45.8 s for 2 chains x 2000 draws, ESS 808) and the
package's previous version (61: 26.3 s, ESS 1610), and the target (>= 90). ``--fit-repeats R``
runs it R times per cache state and reports the medians. Cache states (``--fit-caches``,
default both): ``empty`` (fresh PyTensor and JAX compile caches, as on a first run) and
``warm`` (the user's caches, after one untimed run fills them, as on every later run); the
two can differ by a factor of about two, so both are reported.

Run from the repository root::

    .venv/bin/python benchmarks/fit_backends.py --help
    .venv/bin/python benchmarks/fit_backends.py --sections fit-command --fit-repeats 3
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import bench_common

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
SECTIONS = ("samplers", "fit-command")
DEFAULT_FIT_OUT = Path("results") / "benchmarks" / "fit_command.csv"
#: The posterior variables whose minimum bulk ESS the fit-command section reports.
FIT_COMMAND_VARIABLES = ("cell_mean_logit", "tau_subject", "tau_subject_subset")
#: Minimum bulk ESS of the cell means and SDs per wall-second that ``cd49d fit`` must reach.
FIT_COMMAND_TARGET = 90.0
#: (what, wall seconds, minimum bulk ESS of the cell means and SDs) measured before this
#: benchmark section existed, for the same model and cohort.
FIT_COMMAND_REFERENCES = (
    ("brms 2.18 / Stan, 2 chains x 2000", 45.8, 808.0),
    ("cd49d, previous version", 26.3, 1610.0),
)
FIT_CACHE_STATES = ("empty", "warm")
FIT_COLUMNS = (
    "caches",
    "repeat",
    "wall_s",
    "ess_bulk_min",
    "ess_per_s",
    "exit_status",
    "error_message",
)
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
        "compile from scratch as numpyro (JAX keeps no disk cache here) always does; the fit "
        "command has --fit-caches instead",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        metavar="SECTION",
        help="what to run: samplers (every model x sampler pair) and/or fit-command (the "
        "timed `cd49d fit` of positive_rate); default: both",
    )
    add_fit_command_options(parser.add_argument_group("fit-command section"))
    parser.add_argument(
        "--one", nargs=2, metavar=("MODEL", "SAMPLER"), help=argparse.SUPPRESS
    )  # internal: measure one pair, print one JSON line
    return parser.parse_args(argv)


def add_fit_command_options(group) -> None:
    """Options of the fit-command section."""
    group.add_argument(
        "--fit-repeats",
        type=int,
        default=1,
        help="runs of the fit command per cache state; medians are reported (default: 1)",
    )
    group.add_argument(
        "--fit-caches",
        choices=(*FIT_CACHE_STATES, "both"),
        default="both",
        help="compile caches of the fit command: empty (fresh PyTensor and JAX caches), warm "
        "(the user's, after one untimed run) or both (default)",
    )
    group.add_argument(
        "--fit-out",
        type=Path,
        default=DEFAULT_FIT_OUT,
        help="CSV of the fit-command runs (default: %(default)s)",
    )


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


def run_pair_in_subprocess(model_name: str, sampler: str, args: argparse.Namespace) -> dict:
    """Measure one pair in a subprocess; a crash, timeout or exception gives an error row."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fit_backends_cache_") as compiledir:
        try:
            completed = subprocess.run(
                child_command(model_name, sampler, args),
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=False,
                cwd=REPO_ROOT,
                env=bench_common.cache_environment(None if args.warm_cache else Path(compiledir)),
            )
        except subprocess.TimeoutExpired:
            result = {
                "error_type": "TimeoutExpired",
                "error_message": f"no result within --timeout {args.timeout:g} s",
            }
        else:
            result = bench_common.parse_result(completed, RESULT_PREFIX)
    result["subprocess_s"] = time.perf_counter() - start
    return complete_row(model_name, sampler, result)


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


def write_rows(rows: list[dict], path: Path, columns: tuple[str, ...]) -> None:
    """Write ``columns`` of every row, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
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


# ---------------------------------------------------------------------------------------------
# Section fit-command: the user's `cd49d fit`, timed, and its minimum bulk ESS
# ---------------------------------------------------------------------------------------------


def fit_command(cohort: Path, out_dir: Path) -> list[str]:
    """The fit a user runs: ``cd49d fit COHORT --model positive_rate --no-sensitivity``."""
    executable = Path(sys.executable).with_name("cd49d")
    return [
        str(executable),
        "fit",
        str(cohort),
        "--model",
        "positive_rate",
        "--no-sensitivity",
        "--out",
        str(out_dir),
    ]


def min_bulk_ess(fit_path: Path) -> float:
    """The smallest bulk ESS over every element of the cell means and SDs in ``fit.nc``."""
    import arviz as az
    import xarray as xr

    with xr.open_datatree(fit_path) as tree:
        posterior = tree["posterior"].to_dataset()[list(FIT_COMMAND_VARIABLES)].load()
    ess = az.ess(posterior, method="bulk")
    return min(float(ess[name].min()) for name in FIT_COMMAND_VARIABLES)


def run_fit_command(args: argparse.Namespace, repeat: int, caches: str) -> dict:
    """One timed run of the fit command into a temporary folder; a failure is an error row.

    ``caches`` is ``empty`` (fresh PyTensor and JAX compile caches) or ``warm`` (the user's).
    """
    row = {column: None for column in FIT_COLUMNS} | {"repeat": repeat, "caches": caches}
    with tempfile.TemporaryDirectory(prefix="fit_command_") as workdir:
        out_dir, cache = Path(workdir) / "fit", Path(workdir) / "cache"
        env = bench_common.cache_environment(cache if caches == "empty" else None)
        start = time.perf_counter()
        try:
            completed = subprocess.run(
                fit_command(args.cohort.resolve(), out_dir),
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=False,
                cwd=REPO_ROOT,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return row | {"error_message": f"no result within --timeout {args.timeout:g} s"}
        row["wall_s"] = time.perf_counter() - start
        row["exit_status"] = completed.returncode
        if completed.returncode != 0:
            lines = completed.stderr.strip().splitlines()
            return row | {"error_message": lines[-1] if lines else "(no stderr)"}
        row["ess_bulk_min"] = min_bulk_ess(out_dir / "fit.nc")
    row["ess_per_s"] = row["ess_bulk_min"] / row["wall_s"]
    return row


def median_of(rows: list[dict], column: str) -> float | None:
    """Median of a column over the successful runs, or None if none succeeded."""
    values = sorted(row[column] for row in rows if row["ess_per_s"] is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def fit_command_comparison(rows: list[dict]) -> list[dict]:
    """The references, then this run's medians per cache state: wall seconds, ESS, ESS/s."""
    table = [
        {"what": what, "wall_s": wall_s, "ess_bulk_min": ess, "ess_per_s": ess / wall_s}
        for what, wall_s, ess in FIT_COMMAND_REFERENCES
    ]
    for caches in FIT_CACHE_STATES:
        mine = [row for row in rows if row["caches"] == caches]
        if mine:
            table.append(
                {
                    "what": f"cd49d now, {caches} caches (median of {len(mine)})",
                    "wall_s": median_of(mine, "wall_s"),
                    "ess_bulk_min": median_of(mine, "ess_bulk_min"),
                    "ess_per_s": median_of(mine, "ess_per_s"),
                }
            )
    return table


def target_verdict(ess_per_s: float | None) -> str:
    if ess_per_s is None:
        return "no successful run"
    return "met" if ess_per_s >= FIT_COMMAND_TARGET else "NOT met"


def report_fit_command(rows: list[dict], args: argparse.Namespace) -> None:
    """Print the runs, the comparison with the references and the target verdicts."""
    command = " ".join(fit_command(args.cohort, Path("TMPDIR")))
    print(f"\nFit command: {command}")
    print("(caches: empty = fresh PyTensor and JAX compile caches; warm = the user's, filled by")
    print(" an untimed run first)")
    print(bench_common.format_table(rows, [c for c in FIT_COLUMNS if c != "error_message"]))
    for row in rows:
        if row["error_message"]:
            print(f"ERROR run {row['repeat']} ({row['caches']}): {row['error_message']}")
    comparison = fit_command_comparison(rows)
    print("\nmin bulk ESS (cell means and SDs) per wall-second:")
    print(bench_common.format_table(comparison, ["what", "wall_s", "ess_bulk_min", "ess_per_s"]))
    for row in comparison[len(FIT_COMMAND_REFERENCES) :]:
        print(
            f"target >= {FIT_COMMAND_TARGET:g}, {row['what']}: {target_verdict(row['ess_per_s'])}"
        )
    print(f"Runs written to {args.fit_out}")


def run_fit_command_section(args: argparse.Namespace) -> None:
    """``--fit-repeats`` timed runs of the fit command per cache state, then the report and
    the CSV. Warm runs follow one untimed run that fills the user's caches."""
    states = FIT_CACHE_STATES if args.fit_caches == "both" else (args.fit_caches,)
    rows = []
    for caches in states:
        if caches == "warm":
            print("cd49d fit, untimed run filling the user's caches ...", flush=True)
            run_fit_command(args, -1, caches)
        for repeat in range(args.fit_repeats):
            print(f"cd49d fit, {caches} caches, run {repeat + 1} ...", end=" ", flush=True)
            row = run_fit_command(args, repeat, caches)
            status = row["error_message"] or f"{row['wall_s']:.1f} s, {row['ess_per_s']:.1f} ESS/s"
            print(status, flush=True)
            rows.append(row)
    write_rows(rows, args.fit_out, FIT_COLUMNS)
    report_fit_command(rows, args)


def run_samplers_section(args: argparse.Namespace) -> None:
    """Every (model, sampler) pair in its own subprocess, then the table and the CSV."""
    rows = []
    for model_name in args.models:
        for sampler in args.samplers:
            print(f"{model_name} / {sampler} ...", end=" ", flush=True)
            row = run_pair_in_subprocess(model_name, sampler, args)
            status = row["error_type"] or f"{row['wall_s']:.1f} s, {row['ess_per_s']:.1f} ESS/s"
            print(status, flush=True)
            rows.append(row)
    write_rows(rows, args.out, COLUMNS)
    report(rows, args.models, args.out)


def main(argv: list[str] | None = None) -> None:
    """Parse options; measure one pair (``--one``) or run the sections asked for."""
    args = parse_args(argv)
    if args.one:
        run_one_and_print(*args.one, args)
        return
    if "samplers" in args.sections:
        run_samplers_section(args)
    if "fit-command" in args.sections:
        run_fit_command_section(args)


if __name__ == "__main__":
    main()
