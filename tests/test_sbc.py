"""Simulation-based calibration: passes for the model as fitted, fails for wrong priors."""

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from simulations.sbc import SbcConfig, chunk_path, replicate_seeds, run_sbc
from simulations.sbc_summary import (
    failure_dependent,
    fits_table,
    gamma_statistic,
    null_gammas,
    randomised_pit,
    summary_table,
    verdict,
)

pytestmark = pytest.mark.slow
#: A small design keeps the test quick; the full-size run uses the study's.
SMALL = {"HC": 2, "MS_naive": 4, "MS_NTZ": 4, "NMOSD": 2}
DRAWS = 60


CONFIG = SbcConfig(model="positive_rate", draws=DRAWS, group_sizes=SMALL, chunk=30)


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sbc")
    return run_sbc(CONFIG, folder, progress=False), folder


@pytest.fixture(scope="module")
def calibrated(calibrated_run):
    return calibrated_run[0]


def test_sbc_passes_for_the_model_as_fitted(calibrated):
    summary, fits = summary_table(calibrated), fits_table(calibrated)
    assert summary["passes"].all(), summary.loc[~summary["passes"], ["quantity", "p_value"]]
    assert verdict(summary, fits).startswith("SBC passed")
    assert set(summary["kind"]) == {"parameter", "estimand", "log_likelihood"}
    assert {"tau_subject_subset", "pct_pos[MS_NTZ, Treg]", "ratio_fold_change[Th17]"} <= set(
        summary["quantity"]
    )
    assert (summary["contraction"].dropna() > 0.5).all()  # rates are identified by counts


def test_sbc_fails_when_the_fit_uses_other_priors(tmp_path):
    """Generated with cell means ~ Normal(0, 1.5), fitted with Normal(0, 0.5): the ranks of the
    cell means pile up at the edges and SBC must say so."""
    config = replace(CONFIG, fit_priors={"cell_mean_sd": 0.5})
    summary = summary_table(run_sbc(config, tmp_path, progress=False))
    failing = summary.loc[~summary["passes"], "quantity"]
    assert failing.str.startswith("cell_mean_logit").any(), summary[["quantity", "p_value"]]
    assert verdict(summary, fits_table(summary.assign(replicate=0, status="ok"))).startswith(
        "SBC FAILED"
    )


def test_failed_fits_are_kept_and_counted(calibrated):
    fits = fits_table(calibrated)
    assert len(fits) == DRAWS and fits["replicate"].tolist() == list(range(DRAWS))
    failed = calibrated[calibrated["status"] != "ok"]
    assert failed["rank"].isna().all() and failed["true_value"].notna().all()
    summary = summary_table(calibrated)
    assert (summary["failed_fits"] == fits["status"].ne("ok").sum()).all()
    assert (summary["ranked"] == DRAWS - fits["status"].ne("ok").sum()).all()


def test_a_rerun_resumes_with_the_same_results(calibrated_run, tmp_path):
    calibrated, folder = calibrated_run
    shutil.copytree(folder, tmp_path / "run")
    chunk_path(tmp_path / "run", 1).unlink()  # as if killed before the second chunk was stored
    resumed = run_sbc(CONFIG, tmp_path / "run", progress=False)
    keys = ["replicate", "quantity"]
    pd.testing.assert_frame_equal(
        resumed.sort_values(keys).reset_index(drop=True),
        calibrated.sort_values(keys).reset_index(drop=True),
    )


def test_another_configuration_is_refused(tmp_path):
    run_sbc(SbcConfig(model="positive_rate", draws=1, group_sizes=SMALL), tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds SBC results of another configuration"):
        run_sbc(SbcConfig(model="saturation", draws=1, group_sizes=SMALL), tmp_path)


def test_a_folder_made_by_other_code_is_refused_or_with_replace_stale_emptied(tmp_path):
    import json

    from simulations.sbc import open_store

    config = SbcConfig(model="positive_rate", draws=1, group_sizes=SMALL)
    open_store(config, tmp_path)
    manifest = tmp_path / "manifest.json"
    stored = json.loads(manifest.read_text(encoding="utf-8"))
    stored["inputs"]["code"] = "0" * 64  # as if written by an earlier version of models/
    manifest.write_text(json.dumps(stored), encoding="utf-8")
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "chunk-00000.parquet").write_bytes(b"stale")
    with pytest.raises(ValueError) as refused:
        open_store(config, tmp_path)
    assert str(refused.value) == (
        f"{tmp_path} holds SBC results of the model and simulation code (package version or "
        "source files) changed; choose another --out folder (or remove this one, or "
        "--replace-stale)"
    )
    assert open_store(config, tmp_path, replace_stale=True) == [
        "the model and simulation code (package version or source files) changed"
    ]
    assert not (tmp_path / "records").exists()
    assert open_store(config, tmp_path) == []  # current now: resumed, not replaced


def test_seeds_depend_only_on_model_and_replicate():
    config = SbcConfig(model="saturation", draws=10)
    assert replicate_seeds(config, 3) == replicate_seeds(
        SbcConfig(model="saturation", draws=500), 3
    )
    assert replicate_seeds(config, 3) != replicate_seeds(config, 4)


def test_uniformity_statistic_has_its_nominal_level():
    """Under uniform ranks the gamma test rejects at about its level; a shifted ECDF is caught."""
    rng = np.random.default_rng(5)
    null = null_gammas(100)
    cutoff = np.quantile(null, 0.95)
    uniform = [gamma_statistic(rng.uniform(size=100)) > cutoff for _ in range(400)]
    assert abs(np.mean(uniform) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 400)
    ranks = np.minimum(rng.integers(0, 100, size=100) + 30, 99)  # biased ranks
    assert gamma_statistic(randomised_pit(ranks, 99, seed=1)) > cutoff


def test_failures_that_depend_on_the_truth_are_named():
    """Fits that fail where a parameter's true value is small are a selection SBC cannot see:
    the summary names that parameter; failures at random name nothing."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(size=200)
    rows = pd.DataFrame(
        {
            "replicate": np.arange(200),
            "quantity": "tau",
            "kind": "parameter",
            "rank": rng.integers(0, 100, size=200).astype(float),
            "max_rank": 99,
            "true_value": truth,
            "posterior_iqr": 0.1,
        }
    )
    selected = rows.assign(status=np.where(truth < 0.1, "not_converged", "ok"))
    named = failure_dependent(summary_table(selected))
    assert named["quantity"].tolist() == ["tau"]
    assert named["true_median_failed"].iloc[0] < 0.1 < named["true_median_ranked"].iloc[0]
    at_random = rows.assign(status=np.where(rng.uniform(size=200) < 0.1, "not_converged", "ok"))
    assert failure_dependent(summary_table(at_random)).empty
