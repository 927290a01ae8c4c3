"""The engine with stub studies: exact answers, workers, resume, batches, generation failures.

The stubs replace Generate and Analyse (``simulations.engine.Study``), so these tests pay for no
model: each trial is one uniform draw ``u`` from its data seed, and the stub analysis succeeds
when ``u`` is below a known power, so every stored row and every power estimate can be computed
independently from the seeds.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest

from simulations.analyses import result_row
from simulations.engine import RunContext, Study, comparable, run_rounds
from simulations.plan import Plan
from simulations.seeds import replicate_seeds
from simulations.store import Store
from simulations.summarise import power_table
from simulations.trials import Cell

POWER = {"alternative": 0.6, "null": 0.025, "null_ratio": 0.025}
BAD_U = 0.5  # a trial whose uniform draw rounds to this cannot be drawn (see flaky_generator)


class UniformTrials:
    """Stub Generate: one uniform draw per trial, with its cell."""

    def __init__(self, plan: Plan, cell: Cell, design_prior) -> None:
        self.cell = cell

    def draw(self, seed: int) -> pd.DataFrame:
        u = float(np.random.default_rng(seed).uniform())
        return pd.DataFrame({"u": [u], "scenario": [self.cell.scenario], "n": [self.cell.n]})


class FlakyTrials(UniformTrials):
    def draw(self, seed: int) -> pd.DataFrame:
        trial = super().draw(seed)
        if round(trial["u"].iloc[0], 1) == BAD_U:
            raise FloatingPointError("stub: cannot draw")
        return trial


def uniform_trials(plan, cell, design_prior):
    return UniformTrials(plan, cell, design_prior)


def flaky_trials(plan, cell, design_prior):
    return FlakyTrials(plan, cell, design_prior)


def threshold_test(plan: Plan, dataset: pd.DataFrame) -> list[dict]:
    """Stub Analyse: success exactly when u < the scenario's power."""
    u, scenario = float(dataset["u"].iloc[0]), dataset["scenario"].iloc[0]
    return [result_row("e", "stub", 0.025, estimate=u, p_value=u, success=u < POWER[scenario])]


def batch_sizes(context, cell, datasets, seeds) -> list[list[dict]]:
    """Stub batched Analyse: records how many trials each call fitted, and their seeds."""
    return [
        [result_row("e", "stub_batch", np.nan, estimate=len(datasets), p_value=seed % 997)]
        for seed in seeds
    ]


def planned(plan, rep):
    return [("e", "stub", 0.025), ("e", "stub_batch", np.nan)]


STUB = Study(uniform_trials, threshold_test, batch_sizes, planned)
FLAKY = Study(flaky_trials, threshold_test, batch_sizes, planned)


def stub_plan(initial: int = 12, per_task: int = 4) -> Plan:
    return Plan.model_validate(
        {
            "name": "stub",
            "root_seed": 11,
            "trial": {
                "design": "cross_sectional",
                "n": [6, 8],
                "endpoints": ["ratio_fold_change_Th17_Treg"],
            },
            "effect": {"kappa": 0.4},
            "replicates": {"initial": initial, "null": initial, "per_task": per_task},
        }
    )


def run_stub(plan: Plan, out, study: Study = STUB, workers: int = 1) -> pd.DataFrame:
    result_hash = plan.result_hash()
    Store(out, result_hash).open({"result_hash": result_hash, "inputs": {}, "note": "stub"})
    context = RunContext(plan, str(out), result_hash, study=study)
    return run_rounds(context, workers=workers, scheduler=None, progress=False)


def expected_success(plan: Plan, scenario: str, n: int, rep: int) -> bool:
    seed = replicate_seeds(plan.root_seed, plan.result_hash(), scenario, n, rep).data
    return float(np.random.default_rng(seed).uniform()) < POWER[scenario]


def test_a_stub_study_gives_exactly_the_power_its_seeds_imply(tmp_path):
    plan = stub_plan()
    records = run_stub(plan, tmp_path)
    table = power_table(records[records["analysis"] == "stub"]).set_index(["scenario", "n"])
    assert set(table.index.get_level_values("scenario")) == {"alternative", "null", "null_ratio"}
    for (scenario, n), row in table.iterrows():
        hits = sum(expected_success(plan, scenario, n, rep) for rep in range(12))
        assert row["power"] == hits / 12
        assert row["n_reps"] == 12


def test_stub_results_do_not_depend_on_workers(tmp_path):
    plan = stub_plan()
    one = run_stub(plan, tmp_path / "one")
    two = run_stub(plan, tmp_path / "two", workers=2)
    order = ["cell_id", "replicate", "analysis"]
    assert comparable(one.sort_values(order)).equals(comparable(two.sort_values(order)))


def test_runs_of_one_process_share_its_workers_and_a_relative_out_still_lands_right(
    tmp_path, monkeypatch
):
    """Two runs with 2 workers use the same 2 processes (started once, not per run); a run
    started from another working folder with a relative ``out`` writes where it was asked,
    although the workers started in the first folder."""
    from simulations import workers

    monkeypatch.chdir(tmp_path)
    pool = workers.shared_pool(2)
    seen = set(workers.run_in_workers(os.getpid, [()] * 8, 2))
    run_stub(stub_plan(), "first", workers=2)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    records = run_stub(stub_plan(), "second", workers=2)
    seen |= set(workers.run_in_workers(os.getpid, [()] * 8, 2))
    # the same pool and its same two processes served every call (which of them took the 8
    # quick calls of a batch is a race, so the PIDs of one batch are not compared)
    assert workers.shared_pool(2) is pool
    assert len(pool._processes) == 2 and seen <= set(pool._processes)
    assert len(list((tmp_path / "elsewhere" / "second" / "records").rglob("*.parquet"))) > 0
    assert not (tmp_path / "second").exists()
    assert len(records) == len(run_stub(stub_plan(), tmp_path / "one"))


def test_leaving_a_run_early_cancels_the_calls_not_started():
    """An error in the parent mid-run leaves no queued call behind in the shared pool."""
    from simulations import workers

    calls = workers.run_in_workers(time.sleep, [(0.2,)] * 40, 2)
    next(calls)
    calls.close()  # what an exception or an interrupt in the consuming loop does
    started = time.monotonic()
    assert list(workers.run_in_workers(os.getpid, [()] * 2, 2))
    assert time.monotonic() - started < 3  # 38 sleeps of 0.2 s on 2 workers would take 3.8 s


def test_a_round_that_stores_nothing_stops_the_run_instead_of_looping(tmp_path, monkeypatch):
    """Were the records to land where the parent does not look, the run would repeat its
    rounds forever; it stops with the folder named."""
    empty = run_stub(stub_plan(), tmp_path / "reference").iloc[:0]
    monkeypatch.setattr(Store, "records", lambda self: empty)
    with pytest.raises(RuntimeError, match=r"^round 1 stored no replicate under .*/lost$"):
        run_stub(stub_plan(), tmp_path / "lost")


def test_a_resumed_stub_run_keeps_stored_replicates_and_adds_the_rest(tmp_path):
    small, large = stub_plan(initial=8), stub_plan(initial=16)
    assert small.result_hash() == large.result_hash()  # counts do not decide results
    first = run_stub(small, tmp_path / "resumed")
    stored = {
        p: p.stat().st_mtime_ns for p in (tmp_path / "resumed" / "records").rglob("*.parquet")
    }
    resumed = run_stub(large, tmp_path / "resumed")
    assert all(p.stat().st_mtime_ns == t for p, t in stored.items())  # never rewritten
    fresh = run_stub(large, tmp_path / "fresh")
    order = ["cell_id", "replicate", "analysis"]
    assert comparable(resumed.sort_values(order)).equals(comparable(fresh.sort_values(order)))
    assert len(resumed) == 2 * len(first)


def test_the_batched_analysis_fits_each_task_in_one_call(tmp_path):
    records = run_stub(stub_plan(initial=12, per_task=4), tmp_path)
    batch = records[records["analysis"] == "stub_batch"]
    assert set(batch["estimate"]) == {4}  # 4 replicates per task, one call each
    assert (batch["p_value"] == batch["seed_analysis"] % 997).all()  # each its own seed


def test_a_stub_trial_that_cannot_be_drawn_fails_every_planned_row(tmp_path):
    plan = stub_plan()
    records = run_stub(plan, tmp_path, study=FLAKY)
    failed = records[records["status"] == "error"]
    assert not failed.empty
    assert set(failed["error_message"]) == {"drawing the trial failed: stub: cannot draw"}
    per_replicate = failed.groupby(["cell_id", "replicate"])["analysis"].apply(set)
    assert (per_replicate == {"stub", "stub_batch"}).all()
    ok = records[records["status"] == "ok"]
    assert ok.groupby(["cell_id", "replicate"]).ngroups + per_replicate.size == 6 * 12
    table = power_table(records[records["analysis"] == "stub"])
    assert table["n_failed"].sum() == per_replicate.size


@pytest.mark.parametrize("study", [STUB, FLAKY])
def test_every_replicate_is_stored_once(tmp_path, study):
    records = run_stub(stub_plan(), tmp_path, study=study)
    assert not records.duplicated(["cell_id", "replicate", "analysis"]).any()
    assert records.groupby("cell_id")["replicate"].nunique().eq(12).all()
