"""The engine of a power study: cells, tasks, workers, the store, adaptive replication.

``run_plan`` owns everything that is not statistics: it works out which replicates each cell
needs (``replicates.initial``, or ``replicates.null`` for the type-I-error run, plus more where
``replicates.mcse_target`` asks), skips those already stored, cuts the rest into tasks of
``replicates.per_task`` replicates of one cell, and runs them in this process, in local worker
processes (``workers``) or on a Dask cluster (``scheduler``). Each task generates its
replicates, runs the frequentist analyses on each, refits the Bayesian model to all of them at
once (``models.batch``) and stores one record per replicate (``run_task``); a worker compiles a
cell's generator once, and the Bayesian model once per design (``n``), which all of a plan's
scenarios share. A trial that cannot be drawn is stored as a failed row of every analysis.

Seeds come from ``simulations.seeds`` and depend only on (plan, cell, replicate), so a record is
the same whichever worker made it, in whatever order, before or after a crash.

The statistics are arguments (the SimDesign contract, ``../shared/STYLE.md``): a ``Study``
holds Generate (a trial generator per cell) and Analyse (per-trial analyses, and analyses
fitted to all of a task's trials at once), and ``RunContext.study`` says which one a run uses
(``POWER_STUDY``: the package's trial generator, frequentist tests and Bayesian refits). The
engine's own tests run it with stub studies whose answers are known exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from simulations.analyses import (
    failure_rows,
    frequentist_analyses,
    frequentist_rows,
    planned_rules,
)
from simulations.atomic import write_atomically
from simulations.cohort import cohort_csv_text
from simulations.plan import Plan
from simulations.seeds import replicate_seeds
from simulations.store import Store
from simulations.trials import Cell, DesignPrior, TrialGenerator, is_null, plan_scenarios
from simulations.workers import run_in_workers

#: Columns that identify a record's replicate, ahead of the analysis columns.
ID_COLUMNS = (
    "plan_hash",
    "design",
    "scenario",
    "cell_id",
    "n",
    "replicate",
    "seed_data",
    "seed_analysis",
)


@dataclass(frozen=True)
class Study:
    """Generate and Analyse, as module-level functions (sent to worker processes and Dask).

    Attributes
    ----------
    generator
        ``generator(plan, cell, design_prior) -> object`` with ``draw(seed) -> DataFrame``:
        a cell's trial generator, built once per worker and cell (``design_prior``: a fit's
        path or None).
    analyse
        ``analyse(plan, dataset) -> list[dict]``: result rows of one trial
        (``simulations.analyses.result_row`` keys).
    analyse_batch
        ``analyse_batch(context, cell, datasets, seeds) -> list[list[dict]]``: result rows of
        each of several trials fitted together (the Bayesian refits), or None.
    planned
        ``planned(plan, rep) -> list[(endpoint, analysis, nominal_level)]``: the rows a
        replicate has, so that a trial that cannot be drawn fails each of them.
    """

    generator: Callable
    analyse: Callable
    analyse_batch: Callable | None
    planned: Callable


@dataclass(frozen=True)
class RunContext:
    """What a task needs besides its cell and replicates (sent to each worker)."""

    plan: Plan
    out: str
    result_hash: str
    design_prior: str | None = None
    save_datasets: bool = False
    study: Study | None = None  # None: POWER_STUDY (defined below)

    def __post_init__(self) -> None:
        # absolute: a shared pool's workers keep the working folder they started in
        object.__setattr__(self, "out", str(Path(self.out).absolute()))
        if self.design_prior is not None:
            object.__setattr__(self, "design_prior", str(Path(self.design_prior).absolute()))

    @property
    def statistics(self) -> Study:
        return self.study or POWER_STUDY


@dataclass(frozen=True)
class Task:
    cell: Cell
    replicates: tuple[int, ...]


@dataclass(frozen=True)
class TaskOutcome:
    cell_id: str
    replicates: int
    failed: int


def plan_cells(plan: Plan, *, design_prior: bool = False) -> list[Cell]:
    """Every cell: each of the plan's scenarios (``simulations.trials.plan_scenarios``: the
    alternative and, unless ``replicates.null`` is 0, its question's nulls) at each n."""
    scenarios = plan_scenarios(plan, design_prior=design_prior)
    return [Cell(scenario, n) for scenario in scenarios for n in plan.trial.n]


# --- worker side --------------------------------------------------------------------------

_WORKER_CACHE: dict[tuple[str, str], dict] = {}
_BAYES_CACHE: dict[tuple[str, int], object] = {}


def cell_tools(context: RunContext, cell: Cell) -> dict:
    """The cell's generator (compiled, for the package's own), once per process."""
    key = (context.result_hash, cell.cell_id)
    if key not in _WORKER_CACHE:
        generator = context.statistics.generator(context.plan, cell, context.design_prior)
        _WORKER_CACHE.clear()  # one cell at a time keeps a worker's memory flat
        _WORKER_CACHE[key] = {"generator": generator}
    return _WORKER_CACHE[key]


def trial_generator(plan: Plan, cell: Cell, design_prior: str | None) -> TrialGenerator:
    """The package's Generate: trials drawn from the joint model (``simulations.trials``)."""
    return TrialGenerator(plan, cell, DesignPrior(design_prior) if design_prior else None)


def bayesian_for(context: RunContext, cell: Cell, template: pd.DataFrame):
    """The compiled Bayesian analysis of a design (shared by its scenarios), once per process."""
    key = (context.result_hash, cell.n)
    if key not in _BAYES_CACHE:
        from simulations.bayes import BayesianAnalysis  # PyMC model + JAX: only if needed

        if len(_BAYES_CACHE) >= 2:
            _BAYES_CACHE.pop(next(iter(_BAYES_CACHE)))
        _BAYES_CACHE[key] = BayesianAnalysis(context.plan, template)
    return _BAYES_CACHE[key]


def wants_bayes(plan: Plan, rep: int) -> bool:
    rules = plan.analysis.bayesian
    return rules.enabled and (rules.replicates is None or rep < rules.replicates)


def replicate_ids(context: RunContext, cell: Cell, rep: int, seeds) -> dict:
    return {
        "plan_hash": context.result_hash,
        "design": context.plan.trial.design,
        "scenario": cell.scenario,
        "cell_id": cell.cell_id,
        "n": cell.n,
        "replicate": rep,
        "seed_data": seeds.data,
        "seed_analysis": seeds.analysis,
    }


def frequentist_analysis(plan: Plan, dataset: pd.DataFrame) -> list[dict]:
    """The package's per-trial Analyse: the plan's frequentist tests (``simulations.analyses``)."""
    if not plan.analysis.frequentist:
        return []
    return frequentist_rows(
        dataset,
        design=plan.trial.design,
        endpoints=list(plan.trial.endpoints),
        alpha=plan.analysis.one_sided_alpha,
        mixed=plan.analysis.mixed_model,
        mfi=plan.trial.measures_mfi,
    )


def bayesian_analysis(context: RunContext, cell: Cell, datasets: list, seeds: list[int]):
    """The package's batched Analyse: the plan's Bayesian model refitted to every trial."""
    return bayesian_for(context, cell, datasets[0]).analyse_batch(datasets, seeds)


def planned_analyses(plan: Plan, rep: int) -> list[tuple[str, str, float]]:
    """Every ``(endpoint, analysis, nominal_level)`` row the package's analyses give a replicate."""
    endpoints = list(plan.trial.endpoints)
    planned = []
    if plan.analysis.frequentist:
        alpha = plan.analysis.one_sided_alpha
        names = frequentist_analyses(
            plan.trial.design, mixed=plan.analysis.mixed_model, mfi=plan.trial.measures_mfi
        )
        planned += [(e, name, alpha) for e in endpoints for name in names]
    if wants_bayes(plan, rep):
        planned += planned_rules(endpoints, plan.analysis.bayesian)
    return planned


POWER_STUDY = Study(
    generator=trial_generator,
    analyse=frequentist_analysis,
    analyse_batch=bayesian_analysis,
    planned=planned_analyses,
)


def frequentist_for(context: RunContext, dataset: pd.DataFrame) -> list[dict]:
    """The per-trial rows of one trial, each with its share of the time taken."""
    started = time.perf_counter()
    rows = context.statistics.analyse(context.plan, dataset)
    for row in rows:
        row["seconds"] = (time.perf_counter() - started) / max(len(rows), 1)
    return rows


def bayesian_rows(context: RunContext, cell: Cell, datasets: list, seeds: list[int]) -> list:
    """Batched rows of each trial, all fitted at once, each with its share of the time."""
    batch = context.statistics.analyse_batch
    if not datasets or batch is None:
        return [[] for _ in datasets]
    started = time.perf_counter()
    per_trial = batch(context, cell, datasets, seeds)
    share = (time.perf_counter() - started) / len(datasets)
    for rows in per_trial:
        for row in rows:
            row["seconds"] = share / max(len(rows), 1)
    return per_trial


def run_task(context: RunContext, task: Task) -> TaskOutcome:
    """Generate and analyse a task's missing replicates; store one record per replicate."""
    store = Store(context.out, context.result_hash)
    done = store.done(task.cell.cell_id)
    reps = [rep for rep in task.replicates if rep not in done]
    plan, generator = context.plan, cell_tools(context, task.cell)["generator"]
    seeds = {
        rep: replicate_seeds(
            plan.root_seed, context.result_hash, task.cell.scenario, task.cell.n, rep
        )
        for rep in reps
    }
    datasets, failures = draw_trials(generator, {rep: seeds[rep].data for rep in reps})
    if context.save_datasets:
        for rep, dataset in datasets.items():
            save_dataset(dataset, store.dataset_path(task.cell.cell_id, rep))
    bayes_reps = [rep for rep in datasets if wants_bayes(plan, rep)]
    bayes = bayesian_rows(
        context,
        task.cell,
        [datasets[r] for r in bayes_reps],
        [seeds[r].analysis for r in bayes_reps],
    )
    bayes_by_rep = dict(zip(bayes_reps, bayes, strict=True))
    failed = 0
    for rep in reps:
        if rep in failures:
            rows = generation_failed(context, rep, failures[rep])
        else:
            rows = frequentist_for(context, datasets[rep]) + bayes_by_rep.get(rep, [])
        ids = replicate_ids(context, task.cell, rep, seeds[rep])
        record = pd.DataFrame([{**ids, **row} for row in rows])
        store.write_record(task.cell.cell_id, rep, record)
        failed += int((record["status"] != "ok").any())
    return TaskOutcome(task.cell.cell_id, len(task.replicates), failed)


def draw_trials(generator, seeds: dict[int, int]) -> tuple[dict, dict[int, Exception]]:
    """Each replicate's trial, or the error that drawing it raised (a result, not a stop)."""
    datasets, failures = {}, {}
    for rep, seed in seeds.items():
        try:
            datasets[rep] = generator.draw(seed)
        except Exception as err:  # stored as every analysis's failure of this replicate
            failures[rep] = err
    return datasets, failures


def generation_failed(context: RunContext, rep: int, err: Exception) -> list[dict]:
    """Rows of a replicate whose trial could not be drawn: every analysis it would have had,
    ``status = "error"``, the reason in the message; counted as a failure in every table."""
    planned = context.statistics.planned(context.plan, rep)
    message = f"drawing the trial failed: {str(err).splitlines()[0] if str(err) else ''}"
    rows = failure_rows(planned, "error", type(err).__name__, message.rstrip(": "))
    for row in rows:
        row["seconds"] = 0.0
    return rows


def save_dataset(dataset: pd.DataFrame, path) -> None:
    write_atomically(cohort_csv_text(dataset), path)


# --- driver side --------------------------------------------------------------------------


def replicate_target(plan: Plan, cell: Cell, records: pd.DataFrame) -> int:
    """How many replicates a cell needs now (adaptive when the plan sets an MCSE target).

    With ``mcse_target`` the count grows to ``p(1 - p) / target^2`` for the worst power
    estimate of the cell (failures counted as non-successes; ``p = (k + 0.5) / (m + 1)``, so
    that 0 of 10 does not count as known exactly), rounded up to whole tasks and
    capped at ``replicates.max``. Bayesian rules capped by ``bayesian.replicates`` are left
    out: more replicates would not refit them.
    """
    counts = plan.replicates
    base = counts.null if is_null(cell.scenario) else counts.initial
    if counts.mcse_target is None or records.empty:
        return base
    mine = records[records["cell_id"] == cell.cell_id]
    done = mine["replicate"].nunique()
    if done < base:
        return base
    if plan.analysis.bayesian.replicates is not None:
        mine = mine[~mine["analysis"].str.startswith("bayes_")]
    success = mine["success"] & (mine["status"] == "ok")
    grouped = success.groupby([mine["endpoint"], mine["analysis"]])
    # (k + 0.5) / (m + 1): at 0 or m successes of few replicates p(1 - p) is not 0
    share = (grouped.sum() + 0.5) / (grouped.size() + 1)
    worst = float((share * (1 - share)).max()) if len(share) else 0.0
    needed = math.ceil(worst / counts.mcse_target**2)
    if needed <= done:
        return done
    whole_tasks = math.ceil(needed / counts.per_task) * counts.per_task
    return min(counts.max, max(whole_tasks, done))


def pending_tasks(
    plan: Plan, store: Store, records: pd.DataFrame, *, design_prior: bool = False
) -> list[Task]:
    """Tasks for every replicate that a cell needs and the store lacks."""
    tasks = []
    for cell in plan_cells(plan, design_prior=design_prior):
        done = store.done(cell.cell_id)
        missing = [r for r in range(replicate_target(plan, cell, records)) if r not in done]
        for start in range(0, len(missing), plan.replicates.per_task):
            tasks.append(Task(cell, tuple(missing[start : start + plan.replicates.per_task])))
    return tasks


def execute(
    context: RunContext, tasks: list[Task], *, workers: int, scheduler: str | None
) -> Iterator[TaskOutcome]:
    """Run tasks here, in local processes or on Dask; yield outcomes as tasks finish."""
    if scheduler is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(scheduler) as client:
            futures = [client.submit(run_task, context, task, pure=False) for task in tasks]
            for future in dask_completed(futures):
                yield future.result()
        return
    if workers <= 1:
        for task in tasks:
            yield run_task(context, task)
        return
    yield from run_in_workers(run_task, [(context, task) for task in tasks], workers)


def run_rounds(
    context: RunContext, *, workers: int, scheduler: str | None, progress: bool
) -> pd.DataFrame:
    """Run until every cell has its replicates; returns all records."""
    store = Store(context.out, context.result_hash)
    records = store.records()
    round_number = 0
    prior = context.design_prior is not None
    while tasks := pending_tasks(context.plan, store, records, design_prior=prior):
        round_number += 1
        total = sum(len(task.replicates) for task in tasks)
        failed = 0
        with tqdm(
            total=total, unit="rep", desc=f"round {round_number}", disable=not progress
        ) as bar:
            bar.set_postfix(failed=failed)
            for outcome in execute(context, tasks, workers=workers, scheduler=scheduler):
                failed += outcome.failed
                bar.set_postfix(failed=failed)
                bar.update(outcome.replicates)
        before, records = len(records), store.records()
        if len(records) == before:  # the workers stored nothing: never loop forever
            raise RuntimeError(f"round {round_number} stored no replicate under {context.out}")
    return records


def comparable(records: pd.DataFrame) -> pd.DataFrame:
    """Records without run-time columns, for comparing two runs."""
    return records.drop(columns=["seconds"]).reset_index(drop=True)
