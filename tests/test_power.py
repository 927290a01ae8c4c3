"""The power engine: plan validation, seeds, the store, resume, workers, Dask, and statistics.

Fast exact tests of the machinery first; then the statistical checks (type-I error on 2000 null
replicates per design, power rising with n and effect), all frequentist except one end-to-end
run that includes a Bayesian refit per cell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from models.data import load_cohort
from simulations.analyses import frequentist_rows
from simulations.engine import comparable
from simulations.plan import Plan
from simulations.power import run_plan
from simulations.seeds import replicate_seeds
from simulations.store import StoreMismatch
from simulations.trials import Cell, TrialGenerator
from tests.conftest import ROOT

CLI = [sys.executable, "-m", "analysis"]
ALPHA = 0.025  # every test one-sided
#: The shipped mechanism plan's scenarios: null kappa 0.4 everywhere, alternative Treg 0.55.
MECHANISM_EFFECT = {"kappa": 0.4, "kappa_by_subset": {"Th1": 0.4, "Th17": 0.4, "Treg": 0.55}}
MECHANISM = """name = "m"
root_seed = 1
question = "mechanism"
[trial]
design = "cross_sectional"
n = [8]
endpoints = ["kappa_difference_Treg_Th17"]
"""


def plan_toml(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def make_plan(design: str, n: list[int], *, initial: int, null: int, **extra) -> Plan:
    endpoints = {
        "cross_sectional": ["ratio_fold_change_Th17_Treg"],
        "paired": ["ratio_fold_change_Th17_Treg"],
        "prognostic": ["exacerbation_log_or"],
    }[design]
    if extra.get("question") == "mechanism":
        endpoints = ["kappa_difference_Treg_Th17"]
        extra.setdefault("effect", MECHANISM_EFFECT)
    raw = {
        "name": f"test-{design}",
        "root_seed": 7,
        "trial": {"design": design, "n": n, "endpoints": endpoints, **extra.pop("trial", {})},
        "replicates": {"initial": initial, "null": null, "per_task": extra.pop("per_task", 10)},
        "analysis": {"bayesian": {"enabled": False}, **extra.pop("analysis", {})},
        **extra,
    }
    return Plan.model_validate(raw)


# --- plan validation ---------------------------------------------------------------------

GOOD = """name = "x"
root_seed = 1
[trial]
design = "cross_sectional"
n = [8, 16]
endpoints = ["ratio_fold_change_Th17_Treg"]
"""


@pytest.mark.parametrize(
    ("effect", "expected"),
    [
        (
            "",
            "plan: the mechanism question needs effect.kappa > 0: the null scenario is "
            "natalizumab acting alike on every subset (one kappa), not acting at all",
        ),
        (
            "[effect]\nkappa = 0.4\n",
            "plan: the mechanism question needs effect.kappa_by_subset (the alternative), "
            "e.g. { Th1 = 0.4, Th17 = 0.4, Treg = 0.55 }",
        ),
        (
            "[effect]\nkappa = 0.4\nkappa_by_subset = { Th17 = 0.4 }\n",
            "plan: effect.kappa_by_subset lacks Treg",
        ),
    ],
)
def test_mechanism_plan_needs_both_scenarios(run_cli, tmp_path, effect, expected):
    path = plan_toml(tmp_path, MECHANISM + effect)
    result = run_cli("power", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{path}: {expected}"]
    assert not (tmp_path / "out").exists()


def test_a_shared_kappa_is_an_interaction_on_the_log_scale_but_not_on_the_probit_scale():
    """Under one kappa for every subset (the mechanism null; here the bundled cohort's 0.71, at
    150 + 150 patients), every subset's probit rate falls
    by the same shift: no subset x treatment interaction on the probit scale. On the log (and
    logit) scale the same trial shows a strong one, the Treg rate sitting far below the gate's
    median: exactly why a log-scale interaction, or a rising CD49d ratio, is no evidence that
    natalizumab acts differently on Treg."""
    from simulations.analyses import mixed_model, mixed_model_frame

    effect = {"kappa": 0.71, "kappa_by_subset": {"Treg": 0.8, "Th17": 0.71}}  # the cohort's kappa
    plan = make_plan(
        "cross_sectional", [150], initial=1, null=1, question="mechanism", effect=effect
    )
    trial = TrialGenerator(plan, Cell("null", 150)).draw(20261126)
    probit = mixed_model(trial, "kappa_difference_Treg_Th17", alpha=ALPHA, paired=False)
    log = mixed_model(trial, "ratio_fold_change_Th17_Treg", alpha=ALPHA, paired=False)
    assert 0.0015 < probit["p_value"] < 0.9985  # |t| < 3: no interaction
    assert abs(probit["estimate"]) < 0.03
    assert log["p_value"] < 1e-6 and log["estimate"] > 0.2
    rows = mixed_model_frame(trial, "kappa_difference_Treg_Th17")
    rate = (rows["n_cd49d_pos"] + 0.5) / (rows["n_cells"] + 1)
    rows["response"] = np.log(rate / (1 - rate))
    units = rows["patient"]
    logit = smf.mixedlm("response ~ effector * treated", rows, groups=units).fit(reml=True)
    assert logit.tvalues["effector:treated"] > 3


def test_cells_of_one_design_share_one_compiled_sampler_and_draw_as_if_alone():
    """The alternative and null cells at one n reuse one compiled sampler; drawn in turn, each
    gives the trials it gives when compiled on its own (every parameter is set per draw)."""
    from simulations import trials

    plan = make_plan("cross_sectional", [8, 12], initial=1, null=1)
    alternative, null = (TrialGenerator(plan, Cell(s, 8)) for s in ("alternative", "null"))
    assert alternative.sampler is null.sampler
    assert TrialGenerator(plan, Cell("alternative", 12)).sampler is not alternative.sampler
    interleaved = [alternative.draw(1), null.draw(1), alternative.draw(2)]
    assert not interleaved[0].equals(interleaved[1])  # the scenarios' parameters differ
    trials._SAMPLERS.clear()
    alone = TrialGenerator(plan, Cell("alternative", 8))
    assert alone.draw(1).equals(interleaved[0]) and alone.draw(2).equals(interleaved[2])
    trials._SAMPLERS.clear()
    assert TrialGenerator(plan, Cell("null", 8)).draw(1).equals(interleaved[1])


@pytest.mark.parametrize("design", ["cross_sectional", "paired"])
def test_the_mixed_model_is_statsmodels_formula_fit_to_the_digit(design):
    """The interaction's estimate and SE are those of ``smf.mixedlm("response ~ effector *
    treated")`` with the same groups, exactly, and the p value its t test's (the design matrix
    is built without the formula, for speed)."""
    from simulations.analyses import mixed_model, mixed_model_frame

    plan = make_plan(design, [12], initial=1, null=1)
    trial = TrialGenerator(plan, Cell("alternative", 12)).draw(20261205)
    endpoint = "ratio_fold_change_Th17_Treg"
    ours = mixed_model(trial, endpoint, alpha=ALPHA, paired=design == "paired")
    rows = mixed_model_frame(trial, endpoint)
    units = rows["patient"] + ":" + rows["subset"] if design == "paired" else rows["patient"]
    reference = smf.mixedlm("response ~ effector * treated", rows, groups=units).fit(
        reml=True, method="bfgs"
    )
    assert ours["status"] == "ok"
    assert ours["estimate"] == reference.params["effector:treated"]
    assert ours["std_error"] == reference.bse["effector:treated"]
    df = rows["patient"].nunique() - (1 if design == "paired" else 2)
    t_value = reference.tvalues["effector:treated"]
    assert ours["p_value"] == pytest.approx(stats.t.sf(t_value, df), rel=1e-12)


def test_the_effect_is_stated_on_the_observable_scale():
    """What kappa means in % CD49d+ cells, from the generating graph: under the biomarker null
    nothing moves; under the mechanism null (one kappa, 0.4) every probit shift is equal and
    yet the CD49d ratios rise; its alternative's probit-shift difference is the closed form's."""
    from simulations.observable import observable_effect
    from simulations.plan import load_plan

    biomarker = observable_effect(
        load_plan(ROOT / "simulations" / "plans" / "cross_sectional.toml")
    )
    null = biomarker["null"]
    assert null["pct_pos"]["MS_NTZ"] == null["pct_pos"]["MS_naive"]
    assert set(null["ratio_fold_change"].values()) == {1.0}
    mechanism = observable_effect(load_plan(ROOT / "simulations" / "plans" / "mechanism.toml"))
    assert set(mechanism["null"]["probit_shift_difference"].values()) == {0.0}
    assert min(mechanism["null"]["ratio_fold_change"].values()) > 1.3  # the gate position alone
    assert (
        mechanism["null"]["pct_pos"]["MS_NTZ"]["Treg"]
        < mechanism["null"]["pct_pos"]["MS_naive"]["Treg"]
    )
    # closed form at the bundled occupancy distribution (mean 0.87, SD 0.056) and sigma 1.5
    from scipy.special import expit

    from models.saturation import HERMITE_NODES, HERMITE_WEIGHTS
    from simulations.cohort import load_config, natural_to_model

    p = load_config().parameters
    occupancy = natural_to_model(
        sigma=1.5,
        kappa=0.4,
        saturation_mean=p["saturation_mean"],
        saturation_sd=p["saturation_sd"],
        reference=2,
    )
    rho = 0.6 + 0.4 * expit(
        occupancy["saturation_logit_mean"] + occupancy["saturation_logit_sd"] * HERMITE_NODES
    )
    expected = HERMITE_WEIGHTS @ (np.log1p(-0.4 * rho) - np.log1p(-0.55 * rho)) / 1.5
    for value in mechanism["alternative"]["probit_shift_difference"].values():
        assert value == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("[trial]", "[trial]\nallocaton = 2"),
            "trial.allocaton: unknown key (did you mean 'allocation'?)",
        ),
        (("n = [8, 16]", "n = [-8, 16]"), "trial.n.0: Input should be greater than or equal to 4"),
        (
            ("[trial]", "[trial]\nallocation = 0"),
            "trial.allocation: Input should be greater than 0",
        ),
        (
            ('endpoints = ["ratio_fold_change_Th17_Treg"]', 'endpoints = ["ratio_Th17"]'),
            "trial.endpoints.0: Input should be 'ratio_fold_change_Th17_Treg', "
            "'ratio_fold_change_Th1_Treg', 'differential_reduction_Treg_Th17', "
            "'differential_reduction_Treg_Th1', 'kappa_difference_Treg_Th17', "
            "'kappa_difference_Treg_Th1' or 'exacerbation_log_or'",
        ),
        (
            ('endpoints = ["ratio_fold_change_Th17_Treg"]', 'endpoints = ["exacerbation_log_or"]'),
            "plan: endpoint 'exacerbation_log_or' does not answer the biomarker question "
            "(allowed: ratio_fold_change_Th17_Treg, ratio_fold_change_Th1_Treg, "
            "differential_reduction_Treg_Th17, differential_reduction_Treg_Th1)",
        ),
        (
            ("root_seed = 1", 'root_seed = 1\nquestion = "mechanism"'),
            "plan: endpoint 'ratio_fold_change_Th17_Treg' does not answer the mechanism question "
            "(allowed: kappa_difference_Treg_Th17, kappa_difference_Treg_Th1)",
        ),
        (
            ("root_seed = 1", "root_seed = 1\n[analysis]\nalpha = 0.05"),
            "analysis: 'alpha' is now 'one_sided_alpha': every test is one-sided in the "
            "hypothesised direction (a two-sided 0.05 that must have that sign is "
            "one_sided_alpha = 0.025)",
        ),
        (
            ('design = "cross_sectional"\nn = [8, 16]', 'design = "paired"\nn = [5, 8]'),
            "plan: at n = 5 the exact Wilcoxon signed-rank test cannot reach p < 0.025 "
            "(smallest one-sided p at n = 5: 0.0312): start trial.n higher",
        ),
        (
            ("root_seed = 1", "root_seed = 1\nreplicates = 5"),
            "replicates: Input should be a valid dictionary or instance of Replicates",
        ),
        (
            ("n = [8, 16]", "n = [16, 8]"),
            "trial: n must be strictly increasing without repeats, got [16, 8]",
        ),
        (
            ("root_seed = 1", "root_seed = 1\n[analysis.bayesian]\nrope_half_width = 0.1"),
            "analysis.bayesian.rope_half_width: give rope_half_width per endpoint family, on "
            "that endpoint's scale, e.g. rope_half_width = { ratio_fold_change = 0.1 } "
            "(families: ratio_fold_change, differential_reduction, kappa_difference, "
            "exacerbation_log_or)",
        ),
    ],
)
def test_bad_plan_is_refused_in_one_line_before_any_work(run_cli, tmp_path, change, expected):
    path = plan_toml(tmp_path, GOOD.replace(*change))
    out = tmp_path / "out"
    result = run_cli("power", path, "--out", out)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{path}: {expected}"]
    assert not out.exists()


def test_shipped_plans_are_valid_and_hash_stably():
    from simulations.plan import load_plan

    designs = {
        "cross_sectional": "cross_sectional",
        "paired": "paired",
        "prognostic": "prognostic",
        "mechanism": "cross_sectional",
        "mechanism_paired": "paired",
        "mechanism_mfi": "cross_sectional",
    }
    shipped = {path.stem for path in (ROOT / "simulations" / "plans").glob("*.toml")}
    assert shipped == set(designs)
    import yaml

    pipeline = yaml.safe_load((ROOT / "pipeline.yaml").read_text(encoding="utf-8"))
    assert set(pipeline["plans"]) == shipped  # `make reproduce` (the pipeline) runs every plan
    for name, design in designs.items():
        plan = load_plan(ROOT / "simulations" / "plans" / f"{name}.toml")
        assert plan.trial.design == design
        assert (
            plan.result_hash()
            == load_plan(ROOT / "simulations" / "plans" / f"{name}.toml").result_hash()
        )
        bigger = plan.model_copy(
            update={"replicates": plan.replicates.model_copy(update={"initial": 9})}
        )
        assert bigger.result_hash() == plan.result_hash()  # counts do not change results


def test_replicate_seeds_depend_only_on_plan_cell_and_replicate():
    a = replicate_seeds(1, "ab" * 32, "null", 8, 3)
    assert a == replicate_seeds(1, "ab" * 32, "null", 8, 3)
    others = [
        replicate_seeds(2, "ab" * 32, "null", 8, 3),
        replicate_seeds(1, "cd" * 32, "null", 8, 3),
        replicate_seeds(1, "ab" * 32, "alternative", 8, 3),
        replicate_seeds(1, "ab" * 32, "null", 9, 3),
        replicate_seeds(1, "ab" * 32, "null", 8, 4),
    ]
    assert all(o != a for o in others) and a.data != a.analysis


def test_a_folder_of_another_plan_is_refused(tmp_path):
    plan = make_plan("prognostic", [20], initial=2, null=2)
    run_plan(plan, tmp_path, progress=False)
    other = plan.model_copy(update={"root_seed": 8})
    with pytest.raises(StoreMismatch, match="holds results of other inputs: the plan or design"):
        run_plan(other, tmp_path, progress=False)


def test_a_grown_grid_keeps_the_stored_cells_and_draws_as_a_fresh_run(tmp_path):
    plan = make_plan("prognostic", [20], initial=2, null=2)
    run_plan(plan, tmp_path / "grown", progress=False)
    stored = sorted((tmp_path / "grown" / "records").rglob("*.parquet"))
    before = {path: path.stat().st_mtime_ns for path in stored}
    grown = plan.model_copy(update={"trial": plan.trial.model_copy(update={"n": [20, 30]})})
    assert grown.result_hash() == plan.result_hash()
    outputs = run_plan(grown, tmp_path / "grown", progress=False)
    assert {path: path.stat().st_mtime_ns for path in stored} == before  # not redrawn
    assert sorted(outputs.power["n"].unique()) == [20, 30]
    fresh = run_plan(grown, tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(comparable(outputs.records), comparable(fresh.records))
    shrunk = run_plan(plan, tmp_path / "grown", progress=False)  # the grid shrinks again
    assert sorted(shrunk.power["n"].unique()) == [20]


def test_a_folder_is_refused_after_its_cohort_configuration_was_edited(tmp_path):
    """The result hash covers the configuration's contents, not its path: edited between two
    runs into one folder, the second run is refused, naming what changed, and writes nothing."""
    from simulations.cohort import DEFAULT_CONFIG

    config = tmp_path / "cohort.toml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    plan = make_plan(
        "cross_sectional",
        [8],
        initial=2,
        null=0,
        effect={"kappa": 0.4, "cohort_config": str(config)},
        analysis={"mixed_model": False, "bayesian": {"enabled": False}},
    )
    out = tmp_path / "out"
    run_plan(plan, out, progress=False)
    before = sorted(p.name for p in out.rglob("*"))
    config.write_text(
        config.read_text(encoding="utf-8").replace("value = 1.5", "value = 1.2"), encoding="utf-8"
    )
    more = plan.model_copy(update={"replicates": plan.replicates.model_copy(update={"initial": 4})})
    with pytest.raises(StoreMismatch) as refused:
        run_plan(more, out, progress=False)
    assert str(refused.value) == (
        f"{out} holds results of other inputs: the cohort configuration file's contents "
        "changed. Choose another --out folder (or remove this one, or --replace-stale)"
    )
    assert sorted(p.name for p in out.rglob("*")) == before


def test_replace_stale_starts_a_folder_of_other_inputs_afresh_and_says_why(tmp_path):
    plan = make_plan(
        "cross_sectional",
        [8],
        initial=2,
        null=0,
        effect={"kappa": 0.4},
        analysis={"mixed_model": False, "bayesian": {"enabled": False}},
    )
    out = tmp_path / "out"
    first = run_plan(plan, out, progress=False)
    other = plan.model_copy(update={"root_seed": plan.root_seed + 1})
    again = run_plan(other, out, progress=False, replace_stale=True)
    assert len(again.replaced) == 1
    assert again.replaced[0].startswith("the plan or design prior changed (result hash")
    changed = ["estimate", "p_value"]
    assert not again.records[changed].equals(first.records[changed])  # none of it kept
    fresh = run_plan(other, tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(again.power, fresh.power)
    assert run_plan(other, out, progress=False, replace_stale=True).replaced == ()


def test_the_code_digest_changes_with_any_source_file(tmp_path):
    import shutil

    from simulations.digests import CODE_PACKAGES, SOURCE_ROOT, code_digest

    for package in CODE_PACKAGES:
        shutil.copytree(
            SOURCE_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    assert code_digest(tmp_path) == code_digest(SOURCE_ROOT)
    source = tmp_path / "simulations" / "analyses.py"
    source.write_text(source.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert code_digest(tmp_path) != code_digest(SOURCE_ROOT)


def test_a_trial_that_cannot_be_drawn_is_a_failed_row_of_every_analysis(tmp_path, monkeypatch):
    """A generator that raises on one replicate: the run goes on, and that replicate is stored
    with every analysis it would have had as an error, counted in the power table."""
    plan = make_plan(
        "cross_sectional",
        [8],
        initial=4,
        null=0,
        effect={"kappa": 0.4},
        analysis={"bayesian": {"enabled": True, "replicates": 0}},
    )
    bad_seed = replicate_seeds(plan.root_seed, plan.result_hash(), "alternative", 8, 2).data
    draw = TrialGenerator.draw

    def flaky(self, seed):
        if seed == bad_seed:
            raise FloatingPointError("rate not finite")
        return draw(self, seed)

    monkeypatch.setattr(TrialGenerator, "draw", flaky)
    outputs = run_plan(plan, tmp_path, progress=False)
    records = outputs.records
    assert not records["analysis"].str.startswith("bayes_").any()  # replicates = 0: no refits
    failed = records[records["replicate"] == 2]
    assert set(failed["status"]) == {"error"}
    assert set(failed["error_message"]) == {"drawing the trial failed: rate not finite"}
    assert set(failed["error_type"]) == {"FloatingPointError"}
    fine = records[records["replicate"] == 0]
    planned = {(r.endpoint, r.analysis) for r in failed.itertuples()}
    assert planned == {(r.endpoint, r.analysis) for r in fine.itertuples()}
    assert planned == {
        ("ratio_fold_change_Th17_Treg", "mann_whitney"),
        ("ratio_fold_change_Th17_Treg", "mixed_model"),
    }
    assert set(outputs.power["n_failed"]) == {1}
    assert set(outputs.power["n_reps"]) == {4}


# --- the engine: workers, Dask, resume ---------------------------------------------------


def small_plan() -> Plan:
    return make_plan("paired", [6, 8], initial=12, null=12, per_task=4)


def test_results_identical_with_one_and_two_workers_and_on_dask(tmp_path):
    from distributed import LocalCluster

    plan = small_plan()
    serial = run_plan(plan, tmp_path / "serial", progress=False).records
    two = run_plan(plan, tmp_path / "two", workers=2, progress=False).records
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        dask = run_plan(
            plan, tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False
        )
    assert len(serial) == 6 * 12 * 2  # cells (2 n x 3 scenarios) x replicates x analyses
    pd.testing.assert_frame_equal(comparable(serial), comparable(two))
    pd.testing.assert_frame_equal(comparable(serial), comparable(dask.records))


def test_bayesian_refits_do_not_depend_on_workers_or_task_size(tmp_path):
    """The batched refits: tasks of 3 vs 6 replicates (so other batches) and 1 vs 2 workers."""
    analysis = {"frequentist": False, "mixed_model": False, "bayesian": {"enabled": True}}

    def run(name: str, per_task: int, workers: int) -> pd.DataFrame:
        plan = make_plan(
            "cross_sectional", [4], initial=6, null=0, per_task=per_task, analysis=analysis
        )
        return comparable(run_plan(plan, tmp_path / name, workers=workers, progress=False).records)

    one = run("one", per_task=6, workers=1)
    assert len(one) == 6 and set(one["analysis"]) == {"bayes_direction"}  # the plan's one rule
    assert (one["status"] == "ok").all()
    pd.testing.assert_frame_equal(one, run("two", per_task=3, workers=2))


def test_resume_after_kill_9_gives_the_uninterrupted_results(tmp_path):
    text = GOOD + (
        "[replicates]\ninitial = 100\nnull = 100\nper_task = 10\n"
        "[analysis]\nmixed_model = false\n[analysis.bayesian]\nenabled = false\n"
    )
    path = plan_toml(tmp_path, text)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    command = [*CLI, "power", str(path), "--no-progress", "--out"]
    process = subprocess.Popen(
        [*command, str(killed)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list(killed.glob("records/*/*.parquet"))) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    stored = len(list(killed.glob("records/*/*.parquet")))
    assert 40 <= stored < 400, "the kill must land mid-run"
    subprocess.run([*command, str(killed)], cwd=ROOT, check=True, capture_output=True)
    subprocess.run([*command, str(whole)], cwd=ROOT, check=True, capture_output=True)
    resumed = pd.read_parquet(killed / "records.parquet")
    uninterrupted = pd.read_parquet(whole / "records.parquet")
    assert resumed["replicate"].groupby(resumed["cell_id"]).nunique().eq(100).all()
    pd.testing.assert_frame_equal(comparable(resumed), comparable(uninterrupted))
    assert not list(killed.glob("records/*/.rep-*"))  # no temporary file survives a rerun's end
    for name in ("power.csv", "sample_size.csv", "type_i_error.csv"):
        assert (killed / name).read_text() == (whole / name).read_text()


# --- agreement with scipy / statsmodels on saved datasets ---------------------------------


def rates_by_subject(path: Path) -> pd.DataFrame:
    rows = load_cohort(path).rows  # the package's loader validates the saved file
    rows = rows.assign(rate=rows["n_cd49d_pos"] / rows["n_cells"])
    wide = rows.pivot(index="subject_id", columns="subset", values="rate")
    wide.columns = wide.columns.astype(str)
    keys = [c for c in ("group", "exacerbation", "patient_id") if c in rows]
    return rows.groupby("subject_id", observed=True)[keys].first().join(wide)


def record_for(out: Path, cell: str, rep: int, analysis: str, endpoint: str) -> pd.Series:
    record = pd.read_parquet(out / "records" / cell / f"rep-{rep:06d}.parquet")
    chosen = record[(record["analysis"] == analysis) & (record["endpoint"] == endpoint)]
    return chosen.iloc[0]


def test_saved_cross_sectional_trial_reanalysed_with_scipy_and_statsmodels(run_cli, tmp_path):
    text = GOOD.replace("n = [8, 16]", "n = [6]") + (
        "[replicates]\ninitial = 3\nnull = 3\n[analysis.bayesian]\nreplicates = 1\n"
    )
    out = tmp_path / "out"
    result = run_cli(
        "power", plan_toml(tmp_path, text), "--out", out, "--save-datasets", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert "Effect on the observable scale" in result.output
    stated = json.loads((out / "manifest.json").read_text())["observable_effect"]
    assert stated["null"]["ratio_fold_change"] == {"Th1/Treg": 1.0, "Th17/Treg": 1.0}
    for cell in ("alternative-n0006", "null-n0006"):
        for rep in range(3):
            saved = out / "datasets" / cell / f"rep-{rep:06d}.csv"
            wide = rates_by_subject(saved)
            log_ratio = np.log(wide["Th17"] / wide["Treg"])
            treated = log_ratio[wide["group"] == "MS_NTZ"]
            naive = log_ratio[wide["group"] == "MS_naive"]
            expected = stats.mannwhitneyu(treated, naive, alternative="greater")
            got = record_for(out, cell, rep, "mann_whitney", "ratio_fold_change_Th17_Treg")
            assert got["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
            rows = load_cohort(saved).rows
            rows = rows[rows["subset"].isin(["Th17", "Treg"])].copy()
            rows["y"] = np.log((rows["n_cd49d_pos"] + 0.5) / (rows["n_cells"] + 1))
            rows["eff"] = (rows["subset"] == "Th17").astype(float)
            rows["trt"] = (rows["group"] == "MS_NTZ").astype(float)
            fit = smf.mixedlm("y ~ eff * trt", rows, groups=rows["subject_id"].astype(str)).fit(
                reml=True
            )
            mixed = record_for(out, cell, rep, "mixed_model", "ratio_fold_change_Th17_Treg")
            assert mixed["estimate"] == pytest.approx(fit.params["eff:trt"], abs=1e-4)
            df = rows["subject_id"].nunique() - 2
            t_p = stats.t.sf(fit.tvalues["eff:trt"], df=df)  # one-sided: greater
            assert mixed["p_value"] == pytest.approx(t_p, rel=1e-3, abs=1e-6)
            assert mixed["std_error"] == pytest.approx(fit.bse["eff:trt"], rel=1e-3)
            half = stats.t.isf(0.025, df) * mixed["std_error"]
            assert mixed["ci_high"] - mixed["estimate"] == pytest.approx(half)
    bayes = pd.read_parquet(out / "records.parquet").query("analysis == 'bayes_direction'")
    assert len(bayes) == 3  # one refit per cell (3 scenarios), as the plan asks
    assert set(bayes["status"]) <= {"ok", "not_converged", "error"}
    ok = bayes[bayes["status"] == "ok"]
    assert ok["posterior_prob"].between(0, 1).all()
    assert (out / "power_curve.png").stat().st_size > 0
    power = pd.read_csv(out / "power.csv")
    assert {"power", "mcse", "ci_low", "ci_high", "n_reps", "n_failed"} <= set(power.columns)
    # pandas reads the word "null" as missing unless told otherwise (README, "Outputs")
    performance = pd.read_csv(out / "performance.csv", keep_default_na=False, na_values=[""])
    performance = performance.set_index(["scenario", "analysis"])
    th17 = performance[performance["endpoint"] == "ratio_fold_change_Th17_Treg"]
    assert th17.loc[("null", "mixed_model"), "true_value"] == pytest.approx(0, abs=1e-9)
    stated_fold = json.loads((out / "manifest.json").read_text())["observable_effect"]
    fold = stated_fold["alternative"]["ratio_fold_change"]["Th17/Treg"]
    assert th17.loc[("alternative", "bayes"), "true_value"] == pytest.approx(np.log(fold), 1e-3)
    assert th17.loc[("alternative", "mann_whitney"), "note"].startswith("no model SE")
    assert th17.loc[("alternative", "mixed_model"), "n_estimates"] == 3


def test_saved_paired_and_prognostic_trials_reanalysed_independently(tmp_path):
    paired = make_plan("paired", [6], initial=3, null=3)
    run_plan(paired, tmp_path / "paired", save_datasets=True, progress=False)
    for rep in range(3):
        wide = rates_by_subject(
            tmp_path / "paired" / "datasets" / "alternative-n0006" / f"rep-{rep:06d}.csv"
        )
        before = wide[wide["group"] == "MS_naive"].set_index("patient_id")
        after = wide[wide["group"] == "MS_NTZ"].set_index("patient_id").loc[before.index]
        change = np.log(after["Th17"] / after["Treg"]) - np.log(before["Th17"] / before["Treg"])
        got = record_for(
            tmp_path / "paired", "alternative-n0006", rep, "wilcoxon", "ratio_fold_change_Th17_Treg"
        )
        expected = stats.wilcoxon(change, alternative="greater").pvalue
        assert got["p_value"] == pytest.approx(expected, rel=1e-12)
    prognostic = make_plan("prognostic", [30], initial=3, null=3)
    run_plan(prognostic, tmp_path / "prog", save_datasets=True, progress=False)
    for rep in range(3):
        wide = rates_by_subject(
            tmp_path / "prog" / "datasets" / "alternative-n0030" / f"rep-{rep:06d}.csv"
        )
        mean_log = (np.log(wide["Th1"] / wide["Treg"]) + np.log(wide["Th17"] / wide["Treg"])) / 2
        z = (mean_log - mean_log.mean()) / mean_log.std(ddof=0)
        fit = sm.Logit(wide["exacerbation"].to_numpy(float), sm.add_constant(z.to_numpy())).fit(
            disp=0
        )
        got = record_for(
            tmp_path / "prog", "alternative-n0030", rep, "logistic_lr", "exacerbation_log_or"
        )
        assert got["estimate"] == pytest.approx(fit.params[1], rel=1e-6)
        # one-sided: the signed root of the likelihood-ratio statistic, positive slope
        signed = np.sign(fit.params[1]) * np.sqrt(2 * (fit.llf - fit.llnull))
        assert got["p_value"] == pytest.approx(stats.norm.sf(signed), rel=1e-6)
        two_sided = fit.llr_pvalue / 2 if fit.params[1] > 0 else 1 - fit.llr_pvalue / 2
        assert got["p_value"] == pytest.approx(two_sided, rel=1e-6)


# --- statistical properties ---------------------------------------------------------------


def null_rejections(
    design: str,
    n: int,
    reps: int,
    *,
    mixed: bool,
    question: str | None = None,
    scenario: str = "null",
) -> pd.DataFrame:
    """Frequentist analyses of ``reps`` null trials drawn by the package's generator."""
    extra = {"question": question} if question else {}
    if scenario == "null_ratio":
        extra["effect"] = {"kappa": 0.4}
    plan = make_plan(design, [n], initial=1, null=reps, **extra)
    generator = TrialGenerator(plan, Cell(scenario, n))
    rows = []
    for rep in range(reps):
        seeds = replicate_seeds(plan.root_seed, plan.result_hash(), scenario, n, rep)
        rows += frequentist_rows(
            generator.draw(seeds.data),
            design=design,
            endpoints=list(plan.trial.endpoints),
            alpha=ALPHA,
            mixed=mixed,
        )
    return pd.DataFrame(rows)


def assert_calibrated(rows: pd.DataFrame, reps: int) -> None:
    for analysis, group in rows.groupby("analysis"):
        ran = group[group["status"] == "ok"]
        assert len(ran) >= 0.99 * reps, (analysis, group["error_message"].value_counts())
        rate = ran["success"].mean()
        mcse = np.sqrt(ALPHA * (1 - ALPHA) / len(ran))
        assert abs(rate - ALPHA) <= 3 * mcse, (analysis, rate, mcse)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("design", "n"), [("cross_sectional", 16), ("paired", 16), ("prognostic", 60)]
)
def test_type_i_error_of_the_study_tests_on_2000_null_replicates(design, n):
    assert_calibrated(null_rejections(design, n, 2000, mixed=False), 2000)


@pytest.mark.slow
@pytest.mark.parametrize("design", ["cross_sectional", "paired"])
def test_type_i_error_where_the_drug_acts_and_the_ratio_does_not_move(design):
    """The biomarker question's second null (kappa 0.4 in Th17, Treg's and Th1's solved so
    that no population CD49d ratio moves): the study's rank test holds its level."""
    assert_calibrated(null_rejections(design, 16, 2000, mixed=False, scenario="null_ratio"), 2000)


def test_the_ratio_null_moves_every_rate_but_no_ratio():
    from simulations.observable import observable_effect
    from simulations.trials import plan_scenarios, ratio_null_kappas

    plan = make_plan("cross_sectional", [8], initial=1, null=1, effect={"kappa": 0.4})
    assert plan_scenarios(plan) == ("alternative", "null", "null_ratio")
    assert plan_scenarios(plan, design_prior=True) == ("alternative", "null")
    th1, th17, treg = ratio_null_kappas(plan)
    assert th17 == 0.4 and 0 < treg < th17 < th1 < 1
    stated = observable_effect(plan)["null_ratio"]
    assert stated["ratio_fold_change"] == {"Th1/Treg": 1.0, "Th17/Treg": 1.0}
    for subset in ("Th1", "Th17", "Treg"):
        assert stated["pct_pos"]["MS_NTZ"][subset] < stated["pct_pos"]["MS_naive"][subset] - 0.5


@pytest.mark.slow
@pytest.mark.parametrize("design", ["cross_sectional", "paired"])
def test_mechanism_tests_hold_their_level_at_a_shared_kappa_and_find_a_treg_kappa(design):
    """The mechanism null is natalizumab acting alike on every subset (kappa 0.4): the probit
    rank test (Mann-Whitney of the patients' probit differences; paired: Wilcoxon of their
    changes) keeps its level on 2000 null trials; with Treg at 0.55 it rejects far more."""
    assert_calibrated(null_rejections(design, 16, 2000, mixed=False, question="mechanism"), 2000)
    plan = make_plan(design, [32], initial=1, null=1, question="mechanism")
    generator = TrialGenerator(plan, Cell("alternative", 32))
    rows = []
    for rep in range(100):
        rows += frequentist_rows(
            generator.draw(rep),
            design=design,
            endpoints=list(plan.trial.endpoints),
            alpha=ALPHA,
            mixed=False,
        )
    assert pd.DataFrame(rows)["success"].mean() > 0.6


@pytest.mark.slow
def test_type_i_error_of_the_mixed_model_smoke():
    """400 null trials here; the 2000-replicate check is ``make validate`` (MixedLM is slow)."""
    rows = null_rejections("cross_sectional", 16, 400, mixed=True)
    assert_calibrated(rows[rows["analysis"] == "mixed_model"], 400)


@pytest.mark.validation
@pytest.mark.parametrize(
    ("design", "n"),
    [
        ("cross_sectional", 16),
        ("paired", 16),
        ("prognostic", 60),
        ("mechanism", 16),
        ("mechanism_paired", 16),
    ],
)
def test_type_i_error_of_the_mixed_model_on_2000_null_replicates(design, n):
    question = "mechanism" if design.startswith("mechanism") else None
    design = {"mechanism": "cross_sectional", "mechanism_paired": "paired"}.get(design, design)
    rows = null_rejections(design, n, 2000, mixed=True, question=question)
    assert_calibrated(rows[rows["analysis"] == "mixed_model"], 2000)


@pytest.mark.slow
def test_power_rises_with_n_and_effect_and_approaches_one(tmp_path):
    def power_of(kappa: float) -> pd.Series:
        plan = make_plan(
            "cross_sectional",
            [4, 32],
            initial=150,
            null=1,
            per_task=50,
            effect={"kappa": kappa},
            analysis={"mixed_model": False, "bayesian": {"enabled": False}},
        )
        table = run_plan(plan, tmp_path / str(kappa), workers=2, progress=False).power
        return table[table["scenario"] == "alternative"].set_index("n")

    weak, strong = power_of(0.3), power_of(0.71)
    gap = lambda a, b: (a["power_all"] - b["power_all"]) / np.hypot(a["mcse_all"], b["mcse_all"])  # noqa: E731
    assert gap(weak.loc[32], weak.loc[4]) > 3
    assert gap(strong.loc[4], weak.loc[4]) > 3
    assert strong.loc[32, "power_all"] >= 0.97


# --- assurance: a design prior from a fit ---------------------------------------------------


def write_design_prior(path: Path, *, kappa: float, draws: int = 40, drop: tuple = ()) -> Path:
    """A fit-shaped netCDF whose posterior holds the generating parameters (one chain)."""
    import xarray as xr

    from simulations.cohort import fixed_parameters, load_config

    values = fixed_parameters(load_config())
    values["kappa"] = kappa
    data = {}
    for name, value in values.items():
        if name in drop or name == "exacerbation_intercept":
            continue
        value = np.asarray(value, dtype=float)
        dims = ("chain", "draw", "baseline_group", "subset")[: 2 + value.ndim]
        data[name] = (dims, np.broadcast_to(value, (1, draws, *value.shape)).copy())
    xr.DataTree.from_dict({"posterior": xr.Dataset(data)}).to_netcdf(path)
    return path


def test_design_prior_draws_the_trials_parameters(tmp_path):
    plan = make_plan(
        "cross_sectional",
        [16],
        initial=60,
        null=1,
        effect={"kappa": 0.71},
        analysis={"mixed_model": False, "bayesian": {"enabled": False}},
    )
    conventional = run_plan(plan, tmp_path / "fixed", progress=False).power
    no_effect = write_design_prior(tmp_path / "fit.nc", kappa=0.0)
    assurance = run_plan(plan, tmp_path / "assurance", design_prior=no_effect, progress=False)
    power = lambda table: table.query("scenario == 'alternative'")["power_all"].iloc[0]  # noqa: E731
    assert power(conventional) >= 0.95
    assert power(assurance.power) <= 0.2  # every posterior draw has kappa = 0: no effect
    manifest = (tmp_path / "assurance" / "manifest.json").read_text()
    assert "design_prior_sha256" in manifest


def test_design_prior_without_generating_parameters_is_refused(run_cli, tmp_path):
    fit = write_design_prior(tmp_path / "fit.nc", kappa=0.5, drop=("kappa", "mean_probit_shift"))
    result = run_cli(
        "power", plan_toml(tmp_path, GOOD), "--out", tmp_path / "out", "--design-prior", fit
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{fit}: the design prior must be a fit of a latent-expression model "
        "(saturation or exacerbation); it lacks kappa, mean_probit_shift"
    ]
    assert not (tmp_path / "out").exists()


def test_adaptive_replication_reaches_the_mcse_target_or_the_cap(tmp_path):
    plan = Plan.model_validate(
        {
            "name": "adaptive",
            "root_seed": 5,
            "trial": {
                "design": "cross_sectional",
                "n": [8],
                "endpoints": ["ratio_fold_change_Th17_Treg"],
            },
            "effect": {"kappa": 0.4},
            "replicates": {
                "initial": 10,
                "null": 10,
                "mcse_target": 0.06,
                "max": 80,
                "per_task": 10,
            },
            "analysis": {"mixed_model": False, "bayesian": {"enabled": False}},
        }
    )
    power = run_plan(plan, tmp_path, progress=False).power
    assert (power["n_reps"] > 10).any(), "some cell needed more than the initial replicates"
    for row in power.itertuples():
        assert row.n_reps % 10 == 0 and row.n_reps <= 80
        assert row.mcse_all <= 0.06 or row.n_reps == 80 or pd.isna(row.mcse_all), row


def test_rope_and_precision_are_read_on_each_endpoints_scale():
    from simulations.bayes import decision_rows
    from simulations.plan import Bayesian

    rules = Bayesian(
        rules=["rope", "precision"],
        rope_half_width={"kappa_difference": 0.02},
        precision_width={"kappa_difference": 0.03},
    )
    draws = np.random.default_rng(0).normal(0.06, 0.01, 4000)
    kappa = {r["analysis"]: r for r in decision_rows(draws, "kappa_difference_Treg_Th17", rules)}
    ratio = {r["analysis"]: r for r in decision_rows(draws, "ratio_fold_change_Th17_Treg", rules)}
    assert kappa["bayes_rope"]["success"]  # P(theta > 0.02) is about 1
    assert not ratio["bayes_rope"]["success"]  # the log ratio keeps its default 0.1
    assert not kappa["bayes_precision"]["success"]  # 95% width about 0.039 > 0.03
    assert ratio["bayes_precision"]["success"]  # ... < 0.5, the log ratio's default
    assert kappa["bayes_rope"]["std_error"] == pytest.approx(np.std(draws, ddof=1))
    assert kappa["bayes_rope"]["ci_low"] == pytest.approx(np.quantile(draws, 0.025))


def test_no_figures_writes_the_tables_and_no_figure(run_cli, tmp_path):
    """The pipeline draws the figures in rules of their own (``--no-figures``); a rerun
    without it resumes the stored run and draws them."""
    text = GOOD.replace("n = [8, 16]", "n = [6, 8]") + (
        "[replicates]\ninitial = 2\nnull = 2\n[analysis.bayesian]\nenabled = false\n"
    )
    plan, out = plan_toml(tmp_path, text), tmp_path / "out"
    result = run_cli("power", plan, "--out", out, "--no-figures", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "power.csv").exists() and (out / "sample_size.csv").exists()
    assert not (out / "power_curve.png").exists()
    result = run_cli("power", plan, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "power_curve.png").stat().st_size > 0
