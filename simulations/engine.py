"""The engine of a power study: cells, tasks, workers, the store, adaptive replication.

``run_plan`` owns everything that is not statistics: it works out which replicates each cell
needs (``replicates.initial``, or ``replicates.null`` for the type-I-error run, plus more where
``replicates.mcse_target`` asks), skips those already stored, cuts the rest into tasks of
``replicates.per_task`` replicates of one cell, and runs them in this process, in local worker
processes (``workers``) or on a Dask cluster (``scheduler``). Each task generates, analyses and
stores its replicates one by one (``run_task``); a worker compiles a cell's generator and
Bayesian model once and keeps them for the cell's later tasks.

Seeds come from ``simulations.seeds`` and depend only on (plan, cell, replicate), so a record is
the same whichever worker made it, in whatever order, before or after a crash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context

import pandas as pd
from tqdm.auto import tqdm

from simulations.analyses import frequentist_rows
from simulations.cohort import cohort_csv_text, write_atomically
from simulations.plan import Plan
from simulations.seeds import replicate_seeds
from simulations.store import Store
from simulations.trials import Cell, DesignPrior, TrialGenerator

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
class RunContext:
    """What a task needs besides its cell and replicates (sent to each worker)."""

    plan: Plan
    out: str
    result_hash: str
    design_prior: str | None = None
    save_datasets: bool = False


@dataclass(frozen=True)
class Task:
    cell: Cell
    replicates: tuple[int, ...]


@dataclass(frozen=True)
class TaskOutcome:
    cell_id: str
    replicates: int
    failed: int


def plan_cells(plan: Plan) -> list[Cell]:
    """Every cell: the alternative and the null scenario at each n."""
    return [Cell(scenario, n) for scenario in ("alternative", "null") for n in plan.trial.n]


# --- worker side --------------------------------------------------------------------------

_WORKER_CACHE: dict[tuple[str, str], dict] = {}


def cell_tools(context: RunContext, cell: Cell) -> dict:
    """The cell's compiled generator (and, lazily, Bayesian model), once per process."""
    key = (context.result_hash, cell.cell_id)
    if key not in _WORKER_CACHE:
        prior = DesignPrior(context.design_prior) if context.design_prior else None
        _WORKER_CACHE.clear()  # one cell at a time keeps a worker's memory flat
        _WORKER_CACHE[key] = {"generator": TrialGenerator(context.plan, cell, prior)}
    return _WORKER_CACHE[key]


def bayesian_for(context: RunContext, cell: Cell, template: pd.DataFrame):
    tools = cell_tools(context, cell)
    if "bayes" not in tools:
        from simulations.bayes import BayesianAnalysis  # PyMC model + nutpie: only if needed

        tools["bayes"] = BayesianAnalysis(context.plan, template)
    return tools["bayes"]


def wants_bayes(plan: Plan, rep: int) -> bool:
    rules = plan.analysis.bayesian
    return rules.enabled and (rules.replicates is None or rep < rules.replicates)


def replicate_rows(context: RunContext, cell: Cell, rep: int) -> pd.DataFrame:
    """Generate and analyse one replicate: its record, one row per (endpoint, analysis)."""
    plan = context.plan
    seeds = replicate_seeds(plan.root_seed, context.result_hash, cell.scenario, cell.n, rep)
    dataset = cell_tools(context, cell)["generator"].draw(seeds.data)
    if context.save_datasets:
        store = Store(context.out, context.result_hash)
        save_dataset(dataset, store.dataset_path(cell.cell_id, rep))
    started = time.perf_counter()
    rows = []
    if plan.analysis.frequentist:
        rows += frequentist_rows(
            dataset,
            design=plan.trial.design,
            endpoints=list(plan.trial.endpoints),
            alpha=plan.analysis.alpha,
            mixed=plan.analysis.mixed_model,
        )
    frequentist_seconds = time.perf_counter() - started
    for row in rows:
        row["seconds"] = frequentist_seconds / max(len(rows), 1)
    if wants_bayes(plan, rep):
        started = time.perf_counter()
        (bayes_rows,) = bayesian_for(context, cell, dataset).analyse_batch(
            [dataset], [seeds.analysis]
        )
        for row in bayes_rows:
            row["seconds"] = (time.perf_counter() - started) / len(bayes_rows)
        rows += bayes_rows
    ids = {
        "plan_hash": context.result_hash,
        "design": plan.trial.design,
        "scenario": cell.scenario,
        "cell_id": cell.cell_id,
        "n": cell.n,
        "replicate": rep,
        "seed_data": seeds.data,
        "seed_analysis": seeds.analysis,
    }
    return pd.DataFrame([{**ids, **row} for row in rows])


def save_dataset(dataset: pd.DataFrame, path) -> None:
    write_atomically(cohort_csv_text(dataset), path)


def run_task(context: RunContext, task: Task) -> TaskOutcome:
    """Run a task's replicates in order, storing each record as soon as it is complete."""
    store = Store(context.out, context.result_hash)
    done = store.done(task.cell.cell_id)
    failed = 0
    for rep in task.replicates:
        if rep in done:
            continue
        rows = replicate_rows(context, task.cell, rep)
        store.write_record(task.cell.cell_id, rep, rows)
        failed += int((rows["status"] != "ok").any())
    return TaskOutcome(task.cell.cell_id, len(task.replicates), failed)


# --- driver side --------------------------------------------------------------------------


def replicate_target(plan: Plan, cell: Cell, records: pd.DataFrame) -> int:
    """How many replicates a cell needs now (adaptive when the plan sets an MCSE target).

    With ``mcse_target`` the count grows to ``p(1 - p) / target^2`` for the worst power
    estimate of the cell (failures counted as non-successes), rounded up to whole tasks and
    capped at ``replicates.max``. Bayesian rules capped by ``bayesian.replicates`` are left
    out: more replicates would not refit them.
    """
    counts = plan.replicates
    base = counts.null if cell.scenario == "null" else counts.initial
    if counts.mcse_target is None or records.empty:
        return base
    mine = records[records["cell_id"] == cell.cell_id]
    done = mine["replicate"].nunique()
    if done < base:
        return base
    if plan.analysis.bayesian.replicates is not None:
        mine = mine[~mine["analysis"].str.startswith("bayes_")]
    success = mine["success"] & (mine["status"] == "ok")
    share = success.groupby([mine["endpoint"], mine["analysis"]]).mean()
    worst = float((share * (1 - share)).max()) if len(share) else 0.0
    needed = math.ceil(worst / counts.mcse_target**2)
    if needed <= done:
        return done
    whole_tasks = math.ceil(needed / counts.per_task) * counts.per_task
    return min(counts.max, max(whole_tasks, done))


def pending_tasks(plan: Plan, store: Store, records: pd.DataFrame) -> list[Task]:
    """Tasks for every replicate that a cell needs and the store lacks."""
    tasks = []
    for cell in plan_cells(plan):
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_task, context, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()


def run_rounds(
    context: RunContext, *, workers: int, scheduler: str | None, progress: bool
) -> pd.DataFrame:
    """Run until every cell has its replicates; returns all records."""
    store = Store(context.out, context.result_hash)
    records = store.records()
    round_number = 0
    while tasks := pending_tasks(context.plan, store, records):
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
        records = store.records()
    return records


def comparable(records: pd.DataFrame) -> pd.DataFrame:
    """Records without run-time columns, for comparing two runs."""
    return records.drop(columns=["seconds"]).reset_index(drop=True)
