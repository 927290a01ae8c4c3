"""The refit paths that ``power_throughput.py`` compares, each timed in the process running it.

Every function here runs in a child process of ``power_throughput.py`` (one per path and
``n``) and returns a JSON-ready summary of one path:

- ``naive``: per trial, the cohort and model built from the trial and ``pm.sample`` with PyMC's
  defaults, then the gate (``models.diagnostics.check``); one untimed refit of a warm-up trial
  first, so the timed refits see PyTensor's on-disk cache as any naive loop after its first
  refit does (each timed refit still builds and compiles its model);
- ``nutpie``: ``BayesianAnalysis`` with backend ``nutpie``, one ``analyse_batch`` call over
  every trial (which loops over them, one nutpie call each);
- ``batch_1proc``: ``BayesianAnalysis`` with backend ``batch``, one ``analyse_batch`` call over
  every trial, in this process pinned to one core;
- ``vnuts_1proc``: the alternative this package did not choose, for comparison: the same
  compiled batch sampler with vectorised NUTS (blackjax, the same Laplace start and warmup
  length) as its first attempt instead of jittered HMC, one attempt only, pinned to one core;
- ``batch_2proc``: the same trials split over worker processes started like the engine's
  (``ProcessPoolExecutor``, spawn, ``simulations.workers``: one thread each, pinned to a core);
  each compiles and warms up, waits at a barrier, then takes batches of ``batch_size`` trials
  from a shared counter until none is left (as the pool hands out the engine's tasks); the wall
  time runs from the first worker's start to the last one's end.

``compile_s`` of the compiled paths is the time from building ``BayesianAnalysis`` to the end
of its first ``analyse_batch`` call on a warm-up batch (``batch_size`` trials for batch, one
for nutpie) plus, for batch, one call of each retry program (``extend``, ``nuts``) on it, so
that no compilation falls into the timed part. It includes sampling the warm-up trials: an
upper bound on compilation. Warm-up trials are the engine's trials of replicates numbered from
``WARMUP_FIRST_REPLICATE``, which no timed part fits.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import pandas as pd

SCENARIO = "alternative"
#: First replicate index of the warm-up trials (seeded like any replicate, never timed).
WARMUP_FIRST_REPLICATE = 1_000_000
#: Seconds a worker waits at the barrier for the others to finish compiling.
BARRIER_TIMEOUT_S = 3600.0
#: The barrier of the 2-process run, handed to each worker when it starts (``hold_barrier``).
_BARRIER = None
_NEXT_BATCH = None


@dataclass(frozen=True)
class Trial:
    """One simulated trial and the engine's seeds that drew it and analyse it."""

    replicate: int
    dataset: pd.DataFrame
    seed_data: int
    seed_analysis: int


def with_bayesian(plan, **settings):
    """The plan with ``analysis.bayesian`` settings replaced (``backend``, ``draws``, ...)."""
    from simulations.plan import Plan

    raw = plan.model_dump(mode="json")
    raw["analysis"]["bayesian"].update(settings)
    return Plan.model_validate(raw)


def draw_trials(plan, n: int, replicates: Iterable[int]) -> list[Trial]:
    """Trials of the alternative scenario at ``n``, seeded as the engine seeds them."""
    from simulations.seeds import replicate_seeds
    from simulations.trials import Cell, TrialGenerator

    generator = TrialGenerator(plan, Cell(SCENARIO, n))
    plan_hash = plan.result_hash()
    trials = []
    for rep in replicates:
        seeds = replicate_seeds(plan.root_seed, plan_hash, SCENARIO, n, rep)
        trials.append(Trial(rep, generator.draw(seeds.data), seeds.data, seeds.analysis))
    return trials


def warmup_trials(plan, n: int, count: int) -> list[Trial]:
    """``count`` trials that no timed part fits, for compiling and warming up."""
    return draw_trials(plan, n, range(WARMUP_FIRST_REPLICATE, WARMUP_FIRST_REPLICATE + count))


def pin_to_one_core() -> None:
    """Restrict this process (and the threads it starts) to one CPU core, where supported."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


# --- naive ------------------------------------------------------------------------------------


def naive_refit(plan, trial: Trial) -> dict:
    """Build the model from the trial, ``pm.sample`` with PyMC's defaults, then the gate.

    An exception is a failed refit (``status`` ``error``), as in the engine.
    """
    import pymc as pm

    from models.data import Cohort
    from models.diagnostics import check
    from models.registry import MODELS
    from simulations.trials import cohort_config

    started = time.perf_counter()
    try:
        cohort = Cohort.from_frame(trial.dataset, cohort_config(plan).spec, source="trial")
        model = MODELS[plan.bayes_model].build(cohort, plan.analysis.bayesian.priors)
        with model:
            idata = pm.sample(random_seed=trial.seed_analysis, progressbar=False)
        report = check(idata)
    except Exception as err:  # a failure is a result, not a crash of the benchmark
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "status": "error", "draws": 0, "note": repr(err)[:200]}
    posterior = idata["posterior"]
    return {
        "seconds": time.perf_counter() - started,
        "status": "ok" if report.passed else "not_converged",
        "draws": posterior.sizes["chain"] * posterior.sizes["draw"],
        "note": report.describe()[:200],
    }


def time_naive(plan, n: int, replicates: int) -> dict:
    """The naive loop over ``replicates`` trials, after one untimed warm-up refit."""
    from models.fit import quiet_sampling_logs

    quiet_sampling_logs()
    warmup = naive_refit(plan, warmup_trials(plan, n, 1)[0])
    refits = [naive_refit(plan, trial) for trial in draw_trials(plan, n, range(replicates))]
    statuses = [refit["status"] for refit in refits]
    return {
        "path": "naive",
        "n": n,
        "replicates": replicates,
        "total_s": sum(refit["seconds"] for refit in refits),
        "compile_s": None,
        "warmup_s": warmup["seconds"],
        "draws_per_refit": max(refit["draws"] for refit in refits),
        "statuses": dict(Counter(statuses)),
        "final_attempts": {},
        "retried": 0,
        "per_refit_s": [refit["seconds"] for refit in refits],
        "notes": sorted({refit["note"] for refit in refits if refit["note"] != "passed"}),
    }


# --- the compiled paths -----------------------------------------------------------------------


class AttemptRecorder:
    """Stands in for a backend's sampler inside ``BayesianAnalysis``, keeping what each fit
    tried (``BayesianAnalysis`` returns decision rows only)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.attempts: list[list[str]] = []

    def fit(self, *args, **kwargs):
        """The sampler's ``fit``; records each fit's ``attempts`` as labels."""
        result = self.sampler.fit(*args, **kwargs)
        for fit in result if isinstance(result, list) else [result]:
            self.attempts.append([attempt_label(a) for a in fit.attempts])
        return result

    def __getattr__(self, name: str):
        return getattr(self.sampler, name)


def attempt_label(attempt) -> str:
    """``hmc@0.8``, ``extend``, ``nuts@0.95`` (batch) or ``nutpie@0.9`` (a target acceptance)."""
    return f"nutpie@{attempt:g}" if isinstance(attempt, float) else str(attempt)


def compile_retry_programs(sampler, trials: list[Trial], data: list[dict]) -> None:
    """Run the batch sampler's ``extend`` and ``nuts`` programs once, so that they compile
    here and not in a timed part where a trial first needs them."""
    seeds = [trial.seed_analysis for trial in trials]
    accept = sampler.settings.target_accept
    first = sampler.fit_attempt(data, seeds, "hmc", accept)
    sampler.fit_attempt(data, seeds, "extend", accept, previous=first)
    for retry_accept in sampler.settings.retry_target_accepts[:1]:  # one compile serves all
        sampler.fit_attempt(data, seeds, "nuts", retry_accept)


def prepared_analysis(plan, backend: str, warmup: list[Trial]):
    """``BayesianAnalysis`` of the backend, compiled and warmed up on the warm-up trials.

    Returns
    -------
    tuple
        The analysis (its sampler wrapped in an ``AttemptRecorder``), the recorder, and the
        seconds from building it to the end of the warm-up (``compile_s``).
    """
    from simulations.bayes import BayesianAnalysis

    started = time.perf_counter()
    analysis = BayesianAnalysis(with_bayesian(plan, backend=backend), warmup[0].dataset)
    analysis.analyse_batch([t.dataset for t in warmup], [t.seed_analysis for t in warmup])
    if backend == "batch":
        data = [analysis.data_of(t.dataset) for t in warmup]
        compile_retry_programs(analysis.sampler, warmup, data)
    compile_s = time.perf_counter() - started
    recorder = AttemptRecorder(analysis.sampler)
    analysis.sampler = recorder
    return analysis, recorder, compile_s


def warmup_size(backend: str) -> int:
    """Trials in the warm-up call: one compiled batch for batch, one trial for nutpie."""
    if backend == "nutpie":
        return 1
    from models.batch import BatchSettings

    return BatchSettings().batch_size


def trial_status(rows: list[dict]) -> str:
    """``ok`` when every row of a trial is, else the first other status (``not_converged``,
    ``error``)."""
    return next((row["status"] for row in rows if row["status"] != "ok"), "ok")


def compiled_summary(path: str, n: int, per_trial_rows: list, attempts: list, plan) -> dict:
    """Statuses, attempts and draws of a compiled path's refits (timings added by callers)."""
    rules = plan.analysis.bayesian
    return {
        "path": path,
        "n": n,
        "replicates": len(per_trial_rows),
        "draws_per_refit": rules.chains * rules.draws,
        "statuses": dict(Counter(trial_status(rows) for rows in per_trial_rows)),
        "final_attempts": dict(Counter(labels[-1] for labels in attempts if labels)),
        "retried": sum(len(labels) > 1 for labels in attempts),
        "notes": [],
    }


def time_compiled(plan, n: int, replicates: int, backend: str) -> dict:
    """One ``analyse_batch`` call over every trial, after compiling and warming up."""
    path = "nutpie" if backend == "nutpie" else "batch_1proc"
    if backend == "batch":
        pin_to_one_core()
    warmup = warmup_trials(plan, n, warmup_size(backend))
    trials = draw_trials(plan, n, range(replicates))
    analysis, recorder, compile_s = prepared_analysis(plan, backend, warmup)
    started = time.perf_counter()
    rows = analysis.analyse_batch([t.dataset for t in trials], [t.seed_analysis for t in trials])
    total_s = time.perf_counter() - started
    summary = compiled_summary(path, n, rows, recorder.attempts, analysis.plan)
    return {**summary, "total_s": total_s, "compile_s": compile_s}


# --- batch over worker processes ------------------------------------------------------------


def hold_barrier(barrier, counter, next_batch) -> None:
    """Worker initializer: start like the engine's workers (one thread, pinned to a core; see
    ``simulations.workers``) and keep the barrier and the shared batch counter (they can only
    reach a worker when it starts)."""
    from simulations.workers import start_worker

    start_worker(counter)
    global _BARRIER, _NEXT_BATCH
    _BARRIER, _NEXT_BATCH = barrier, next_batch


def take_batch(batches: int) -> int | None:
    """The next batch no worker has taken yet, or None when all are taken."""
    with _NEXT_BATCH.get_lock():
        index = _NEXT_BATCH.value
        _NEXT_BATCH.value += 1
    return index if index < batches else None


def batch_worker(plan, trials: list[Trial], warmup: list[Trial]) -> dict:
    """Compile and warm up, wait for every worker, then fit batches of ``trials`` taken from
    the shared counter until none is left (timed), as a process pool hands out the engine's
    tasks: a worker whose batches needed retries takes fewer."""
    analysis, recorder, compile_s = prepared_analysis(plan, "batch", warmup)
    size = warmup_size("batch")
    batches = math.ceil(len(trials) / size)
    _BARRIER.wait(timeout=BARRIER_TIMEOUT_S)
    started = time.time()  # wall clock: comparable between the workers
    fitted = {}
    while (index := take_batch(batches)) is not None:
        batch = trials[index * size : (index + 1) * size]
        recorded = len(recorder.attempts)
        rows = analysis.analyse_batch([t.dataset for t in batch], [t.seed_analysis for t in batch])
        fitted[index] = (rows, recorder.attempts[recorded:])
    return {
        "started": started,
        "finished": time.time(),
        "compile_s": compile_s,
        "batches": sorted(fitted),
        "rows": [row for index in sorted(fitted) for row in fitted[index][0]],
        "attempts": [labels for index in sorted(fitted) for labels in fitted[index][1]],
    }


def time_batch_processes(plan, n: int, replicates: int, processes: int) -> dict:
    """The batch path over ``processes`` spawned workers taking batches from one queue."""
    warmup = warmup_trials(plan, n, warmup_size("batch"))
    trials = draw_trials(plan, n, range(replicates))
    context = get_context("spawn")
    barrier = context.Barrier(processes)
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=hold_barrier,
        initargs=(barrier, context.Value("i", 0), context.Value("i", 0)),
    ) as pool:
        futures = [pool.submit(batch_worker, plan, trials, warmup) for _ in range(processes)]
        outcomes = [future.result() for future in futures]
    rows = [row for outcome in outcomes for row in outcome["rows"]]
    attempts = [labels for outcome in outcomes for labels in outcome["attempts"]]
    summary = compiled_summary(f"batch_{processes}proc", n, rows, attempts, plan)
    return {
        **summary,
        "total_s": max(o["finished"] for o in outcomes) - min(o["started"] for o in outcomes),
        "compile_s": max(o["compile_s"] for o in outcomes),
        "worker_s": [o["finished"] - o["started"] for o in outcomes],
        "worker_compile_s": [o["compile_s"] for o in outcomes],
        "worker_batches": [len(o["batches"]) for o in outcomes],
    }


def time_vectorised_nuts(plan, n: int, replicates: int) -> dict:
    """One vectorised-NUTS attempt per trial with the batch sampler (no retries), one core."""
    pin_to_one_core()
    warmup = warmup_trials(plan, n, warmup_size("batch"))
    trials = draw_trials(plan, n, range(replicates))
    analysis, _, compile_s = prepared_analysis(plan, "batch", warmup)
    sampler = analysis.sampler.sampler  # the BatchSampler behind the recorder
    data = [analysis.data_of(t.dataset) for t in trials]
    seeds = [t.seed_analysis for t in trials]
    accept = sampler.settings.target_accept
    started = time.perf_counter()
    fits = sampler.fit_attempt(data, seeds, "nuts", accept)
    total_s = time.perf_counter() - started
    rules = analysis.plan.analysis.bayesian
    steps = [fit.stats["leapfrog_steps"] for fit in fits]
    return {
        "path": "vnuts_1proc",
        "n": n,
        "replicates": len(fits),
        "draws_per_refit": rules.chains * rules.draws,
        "statuses": dict(Counter("ok" if f.passed else "not_converged" for f in fits)),
        "final_attempts": {f"nuts@{accept:g}": len(fits)},
        "retried": 0,
        "notes": [f"mean leapfrog steps per draw {sum(steps) / len(steps):.1f}; no retries"],
        "total_s": total_s,
        "compile_s": compile_s,
    }


def measure_path(plan, path: str, n: int, replicates: int) -> dict:
    """Time one path at ``n`` over ``replicates`` trials (the child's entry point)."""
    if path == "naive":
        return time_naive(plan, n, replicates)
    if path == "vnuts_1proc":
        return time_vectorised_nuts(plan, n, replicates)
    if path == "nutpie":
        return time_compiled(plan, n, replicates, "nutpie")
    if path == "batch_1proc":
        return time_compiled(plan, n, replicates, "batch")
    processes = int(path.removeprefix("batch_").removesuffix("proc"))
    return time_batch_processes(plan, n, replicates, processes)
