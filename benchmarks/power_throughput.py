"""Bayesian refits per second: the power engine's compile-once path against a naive loop.

Both paths fit the plan's analysis model (``plan.bayes_model``, prior set
``analysis.bayesian.priors``) to the same K simulated trials, drawn by
``simulations.trials.TrialGenerator`` for the ``alternative`` scenario at ``--n`` treated
patients, with the engine's own seeds (``simulations.seeds.replicate_seeds``: replicate ``k``
gets the data seed that draws its trial and the analysis seed that both samplers use).

- ``naive``: per replicate, build the cohort and the model from the trial and call ``pm.sample``
  with PyMC's defaults (its own NUTS; 1000 draws after 1000 tuning steps; ``chains = max(2,
  cores)``; ``target_accept`` 0.8; PyMC's own convergence checks), ``cores=--cores``, then the
  package's diagnostic gate (``models.diagnostics.check``), with no resample. Each refit compiles
  the model anew. ``--naive-settings plan`` gives ``pm.sample`` the plan's chains, draws, tuning
  steps and ``target_accept`` instead, for a like-for-like comparison.
- ``engine``: ``simulations.bayes.BayesianAnalysis`` built once on the first trial (model
  construction and nutpie compilation, timed as ``compile_s``), then ``.analyse(trial, seed)`` per
  replicate: new data into the compiled model, nutpie sampling with the plan's settings (default
  4 chains of 1000 draws after 1000 tuning steps, ``target_accept`` 0.9, 2 cores), the gate, one
  resample at ``target_accept`` 0.97 when the gate fails, and the decision rules.

A refit's seconds run from the trial (a data frame) to a gated posterior; drawing the trials is
not timed. The two paths do not draw the same number of posterior draws with their defaults
(PyMC: 2 chains on 2 cores; the engine: the plan's chains), so the table prints the draws per
refit beside the time, and the gate results of every fit: a fast path that fails the gate more
often is not faster. PyTensor caches compiled C code on disk (``~/.pytensor``), so the naive
loop's later replicates compile faster than its first, as they would in any naive loop; the
per-replicate table shows this. The naive path runs first, so imports and PyTensor's in-memory
state are warm by the time the engine compiles.

Run from the repository root::

    .venv/bin/python benchmarks/power_throughput.py --help
    .venv/bin/python benchmarks/power_throughput.py --replicates 4 --n 8
    .venv/bin/python benchmarks/power_throughput.py --naive-settings plan
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
PLANS_DIR = REPO_ROOT / "simulations" / "plans"
DESIGNS = ("cross_sectional", "paired", "prognostic")
#: Endpoint of the stand-in plan written when no shipped plan exists for the design.
DEFAULT_ENDPOINT = {
    "cross_sectional": "ratio_fold_change_Th17_Treg",
    "paired": "ratio_fold_change_Th17_Treg",
    "prognostic": "exacerbation_log_or",
}
SCENARIO = "alternative"
#: PyMC's NUTS default ``target_accept`` (what ``pm.sample`` uses when given none).
PYMC_DEFAULT_TARGET_ACCEPT = 0.8


@dataclass(frozen=True)
class Trial:
    """One simulated trial and the seeds that drew it and analyse it."""

    replicate: int
    dataset: pd.DataFrame
    seed_data: int
    seed_analysis: int


@dataclass(frozen=True)
class Refit:
    """One timed refit: seconds, gate outcome, posterior draws and what was tried."""

    path: str
    replicate: int
    seconds: float
    passed: bool
    status: str
    draws: int
    attempts: list[float] = field(default_factory=list)
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; see ``--help``."""
    parser = argparse.ArgumentParser(
        description="Refits per second of the power engine (one nutpie compilation, new data "
        "per replicate) against a naive loop (build the model and call pm.sample with PyMC's "
        "defaults per replicate), on the same simulated trials.",
    )
    parser.add_argument("--replicates", type=int, default=4, help="simulated trials K (default: 4)")
    parser.add_argument(
        "--n", type=int, default=8, help="natalizumab-treated patients per trial (default: 8)"
    )
    parser.add_argument(
        "--design",
        choices=DESIGNS,
        default="cross_sectional",
        help="trial design (default: %(default)s)",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        default=None,
        help="plan TOML (default: simulations/plans/DESIGN.toml if it exists, else a stand-in "
        "plan with root_seed 1, one endpoint and the Bayesian defaults, written to a temp dir)",
    )
    parser.add_argument(
        "--cores", type=int, default=2, help="cores for the naive pm.sample calls (default: 2)"
    )
    parser.add_argument(
        "--naive-settings",
        choices=("pymc", "plan"),
        default="pymc",
        help="pm.sample settings of the naive loop: PyMC's defaults (pymc; default) or the "
        "plan's chains, draws, tune and target_accept (plan; a like-for-like comparison)",
    )
    return parser.parse_args(argv)


def stand_in_plan_text(design: str, n: int) -> str:
    """TOML of a minimal plan: one endpoint, every other setting left at its default."""
    return (
        'name = "bench"\n'
        "root_seed = 1\n"
        "[trial]\n"
        f'design = "{design}"\n'
        f"n = [{n}]\n"
        f'endpoints = ["{DEFAULT_ENDPOINT[design]}"]\n'
    )


def plan_path(args: argparse.Namespace, workdir: Path) -> Path:
    """The plan to use: ``--plan``, the shipped plan of the design, or a stand-in written now."""
    if args.plan is not None:
        return args.plan
    shipped = PLANS_DIR / f"{args.design}.toml"
    if shipped.exists():
        return shipped
    stand_in = workdir / f"bench_{args.design}.toml"
    stand_in.write_text(stand_in_plan_text(args.design, args.n), encoding="utf-8")
    return stand_in


def draw_trials(plan, n: int, replicates: int) -> list[Trial]:
    """K trials of the alternative scenario at ``n``, seeded as the engine seeds them."""
    from simulations.seeds import replicate_seeds
    from simulations.trials import Cell, TrialGenerator

    generator = TrialGenerator(plan, Cell(SCENARIO, n))
    plan_hash = plan.result_hash()
    trials = []
    for rep in range(replicates):
        seeds = replicate_seeds(plan.root_seed, plan_hash, SCENARIO, n, rep)
        trials.append(Trial(rep, generator.draw(seeds.data), seeds.data, seeds.analysis))
    return trials


def naive_sample_kwargs(plan, settings: str) -> dict:
    """Extra ``pm.sample`` arguments: none for PyMC's defaults, else the plan's settings."""
    if settings == "pymc":
        return {}
    rules = plan.analysis.bayesian
    return {
        "draws": rules.draws,
        "tune": rules.tune,
        "chains": rules.chains,
        "target_accept": rules.target_accept,
    }


def naive_refit(plan, trial: Trial, *, cores: int, sample_kwargs: dict) -> Refit:
    """Build the model from the trial, ``pm.sample`` (PyMC's NUTS), then the gate."""
    import pymc as pm

    from models.data import Cohort
    from models.diagnostics import check
    from models.registry import MODELS
    from simulations.trials import cohort_config

    started = time.perf_counter()
    cohort = Cohort.from_frame(trial.dataset, cohort_config(plan).spec, source="simulated trial")
    model = MODELS[plan.bayes_model].build(cohort, plan.analysis.bayesian.priors)
    with model:
        idata = pm.sample(
            cores=cores, random_seed=trial.seed_analysis, progressbar=False, **sample_kwargs
        )
    report = check(idata)
    seconds = time.perf_counter() - started
    posterior = idata["posterior"]
    return Refit(
        path="naive",
        replicate=trial.replicate,
        seconds=seconds,
        passed=report.passed,
        status="ok" if report.passed else "not_converged",
        draws=posterior.sizes["chain"] * posterior.sizes["draw"],
        attempts=[sample_kwargs.get("target_accept", PYMC_DEFAULT_TARGET_ACCEPT)],
        note=report.describe(),
    )


class AttemptRecorder:
    """Stands in for a ``RefitSampler``: delegates each fit and keeps the acceptances tried.

    ``BayesianAnalysis.analyse`` returns decision rows only; the recorder lets the benchmark
    report whether a refit needed the engine's resample at a higher target acceptance, which
    roughly doubles its time.
    """

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.settings = sampler.settings
        self.attempts: list[float] = []

    def fit(self, data, *, seed: int, thresholds=None):
        """``RefitSampler.fit``, recording ``result.attempts``."""
        self.attempts = []
        result = self.sampler.fit(data, seed=seed, thresholds=thresholds)
        self.attempts = list(result.attempts)
        return result


def engine_refits(plan, trials: list[Trial]) -> tuple[float, list[Refit]]:
    """Compile the analysis once on the first trial, then ``.analyse`` every trial.

    Returns
    -------
    tuple
        Seconds to build and compile, and one ``Refit`` per trial.
    """
    from simulations.bayes import BayesianAnalysis

    started = time.perf_counter()
    analysis = BayesianAnalysis(plan, trials[0].dataset)
    compile_s = time.perf_counter() - started
    print(f"engine compile: {compile_s:.1f} s", flush=True)
    recorder = AttemptRecorder(analysis.sampler)
    analysis.sampler = recorder
    draws = analysis.settings.chains * analysis.settings.draws
    refits = []
    for trial in trials:
        started = time.perf_counter()
        rows = analysis.analyse(trial.dataset, trial.seed_analysis)
        seconds = time.perf_counter() - started
        print(f"engine replicate {trial.replicate}: {seconds:.1f} s", flush=True)
        statuses = sorted({row["status"] for row in rows})
        messages = sorted({row["error_message"] for row in rows if row["error_message"]})
        refits.append(
            Refit(
                path="engine",
                replicate=trial.replicate,
                seconds=seconds,
                passed=statuses == ["ok"],
                status="/".join(statuses),
                draws=draws,
                attempts=recorder.attempts,
                note="; ".join(messages) or "passed",
            )
        )
    return compile_s, refits


def summary_row(path: str, refits: list[Refit], compile_s: float | None) -> dict:
    """Totals of one path; ``refits_per_s_with_compile`` spreads the compile over the K refits."""
    total_s = sum(refit.seconds for refit in refits)
    with_compile = total_s + (compile_s or 0.0)
    return {
        "path": path,
        "replicates": len(refits),
        "draws_per_refit": refits[0].draws,
        "total_s": total_s,
        "s_per_refit": total_s / len(refits),
        "refits_per_s": len(refits) / total_s,
        "compile_s": compile_s,
        "refits_per_s_with_compile": len(refits) / with_compile,
        "passed_gate": f"{sum(refit.passed for refit in refits)}/{len(refits)}",
    }


def format_value(value) -> str:
    """Table text: floats below 1 to 4 significant digits, others to 2 decimals; None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if value < 1 else f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of dict rows sharing keys."""
    columns = list(rows[0])
    cells = [[format_value(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def refit_table(refits: list[Refit]) -> str:
    """Per-replicate seconds, gate outcome and target acceptances tried."""
    rows = [
        {
            "path": refit.path,
            "replicate": refit.replicate,
            "seconds": refit.seconds,
            "draws": refit.draws,
            "status": refit.status,
            "target_accepts_tried": ",".join(f"{a:g}" for a in refit.attempts),
            "gate": refit.note[:80],
        }
        for refit in refits
    ]
    return format_table(rows)


def machine_facts() -> list[str]:
    """CPU count, load, Python and sampler versions."""
    import nutpie
    import pymc
    import pytensor

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"os.cpu_count(): {os.cpu_count()}",
        f"load average (1, 5, 15 min): {load}",
        f"platform: {platform.platform()}",
        f"python: {platform.python_version()}",
        f"pymc {pymc.__version__}, pytensor {pytensor.__version__}, nutpie {nutpie.__version__}",
    ]


def report(plan, source: str, naive_kwargs: dict, trials: list[Trial], naive, engine) -> None:
    """Print the setup, the per-replicate table, the summary and the engine/naive ratios."""
    compile_s, engine_fits = engine
    rules = plan.analysis.bayesian
    subjects = trials[0].dataset.drop_duplicates("subject_id")["group"].value_counts()
    print(f"\nplan: {source} (result hash {plan.result_hash()[:12]})")
    print(
        f"model: {plan.bayes_model} ({rules.priors} priors); design {plan.trial.design}; "
        f"subjects per trial: {', '.join(f'{g} {c}' for g, c in subjects.items())}; "
        f"{len(trials[0].dataset)} rows; endpoints: {', '.join(plan.trial.endpoints)}"
    )
    print(
        f"engine sampler: nutpie, {rules.chains} chains x {rules.draws} draws, {rules.tune} tune, "
        f"target_accept {rules.target_accept}; naive: PyMC NUTS, pm.sample "
        f"{naive_kwargs or 'defaults'}"
    )
    print("\nPer replicate:")
    print(refit_table(naive + engine_fits))
    summary = [summary_row("naive", naive, None), summary_row("engine", engine_fits, compile_s)]
    print("\nSummary (seconds from trial to gated posterior; compile_s is the engine's one-off):")
    print(format_table(summary))
    naive_rate, engine_rate = summary[0]["refits_per_s"], summary[1]["refits_per_s"]
    amortised = summary[1]["refits_per_s_with_compile"]
    print(f"\nengine/naive refits per second: {engine_rate / naive_rate:.2f} (compile excluded)")
    print(f"engine/naive refits per second: {amortised / naive_rate:.2f} (compile spread over K)")
    draw_ratio = summary[1]["draws_per_refit"] / summary[0]["draws_per_refit"]
    print(f"engine/naive posterior draws per second: {engine_rate / naive_rate * draw_ratio:.2f}")
    print("\nMachine:")
    for line in machine_facts():
        print(f"  {line}")


def main(argv: list[str] | None = None) -> None:
    """Parse options, draw the trials, time both paths and print the figures."""
    args = parse_args(argv)
    from models.fit import quiet_sampling_logs
    from simulations.plan import load_plan

    quiet_sampling_logs()
    print("load average at start:", ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="power_throughput_") as workdir:
        path = plan_path(args, Path(workdir))
        plan = load_plan(path)
        is_stand_in = path.is_relative_to(workdir)
        source = "stand-in plan (temp file, removed)" if is_stand_in else str(path)
        if is_stand_in:
            print("stand-in plan:\n" + path.read_text(encoding="utf-8"), end="")
    trials = draw_trials(plan, args.n, args.replicates)
    naive_kwargs = naive_sample_kwargs(plan, args.naive_settings)
    naive = []
    for trial in trials:
        naive.append(naive_refit(plan, trial, cores=args.cores, sample_kwargs=naive_kwargs))
        print(f"naive replicate {trial.replicate}: {naive[-1].seconds:.1f} s", flush=True)
    engine = engine_refits(plan, trials)
    report(plan, source, naive_kwargs, trials, naive, engine)


if __name__ == "__main__":
    main()
