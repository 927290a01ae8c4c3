"""Cross-validation by subject: folds, held-out data, the comparison's arithmetic."""

import numpy as np
import pandas as pd
import pytest

from analysis.crossval import compare_kfold, crps_from_draws, subject_folds, without_outcomes
from models.data import load_cohort
from models.registry import MODELS
from tests.conftest import BUNDLED_COHORT


@pytest.fixture(scope="module")
def cohort():
    return load_cohort(BUNDLED_COHORT)


def test_folds_partition_subjects_and_spread_every_group(cohort):
    folds = subject_folds(cohort, 5, seed=1)
    flat = [s for fold in folds for s in fold]
    assert sorted(flat) == sorted(cohort.subjects["subject_id"])
    groups = cohort.subjects.set_index("subject_id")["group"].astype(str)
    for fold in folds:
        assert set(groups[fold]) == {"HC", "MS_naive", "MS_NTZ", "NMOSD"}
        assert len(fold) == 10
    assert subject_folds(cohort, 5, seed=1) == folds
    assert subject_folds(cohort, 5, seed=2) != folds


def test_fold_count_is_checked(cohort):
    with pytest.raises(ValueError, match="folds must be between 2 and the number of subjects"):
        subject_folds(cohort, 1, seed=1)


def test_held_out_subjects_leave_the_likelihood_but_not_the_model(cohort):
    held_out = ["NTZ01", "MSN03"]
    training = without_outcomes(cohort, held_out)
    full = MODELS["exacerbation"].build(cohort)
    fold = MODELS["exacerbation"].build(training)
    assert fold.coords["subject"] == full.coords["subject"]
    assert len(fold.coords["count_row"]) == len(full.coords["count_row"]) - 6
    assert "NTZ01" not in fold.coords["event_subject"]
    assert cohort.rows["n_cd49d_pos"].notna().all()  # the caller's cohort is untouched


def test_comparison_sums_and_pairs_subjects():
    per_subject = pd.DataFrame(
        {
            "model": ["a"] * 3 + ["b"] * 3,
            "subject_id": ["s1", "s2", "s3"] * 2,
            "crps": [1.0, 2.0, 3.0, 1.5, np.nan, 2.0],
            "elpd": [-1.0, -2.0, -3.0, -1.5, np.nan, -2.0],
            "effective_draws": [10.0, 20, 30, 5, np.nan, 7],
        }
    )
    summary = compare_kfold(per_subject).set_index("model")
    assert list(compare_kfold(per_subject)["model"]) == ["b", "a"]  # lower crps first
    assert summary.loc["a", "crps"] == pytest.approx(4.0)  # s1 + s3: s2 failed under b
    assert summary.loc["b", "crps"] == pytest.approx(3.5)
    assert summary.loc["a", "crps_diff"] == pytest.approx(0.5)
    # per subject a - b: s1 -0.5, s3 +1.0
    assert summary.loc["a", "crps_diff_se"] == pytest.approx(
        np.sqrt(2) * np.std([-0.5, 1.0], ddof=1)
    )
    assert summary.loc["a", "elpd_diff"] == pytest.approx(-0.5)
    assert summary.loc["b", "n_not_converged"] == 1
    assert summary.loc["a", "median_effective_draws"] == 20.0  # s1 and s3: 10 and 30


def test_crps_matches_brute_force_and_the_normal_closed_form():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=400)
    brute = np.mean(np.abs(draws - 0.3)) - 0.5 * np.mean(np.abs(draws[:, None] - draws[None, :]))
    assert crps_from_draws(draws, 0.3) == pytest.approx(brute, rel=1e-12)
    large = rng.normal(size=200_000)
    closed_form = (np.sqrt(2) - 1) / np.sqrt(np.pi)  # CRPS of N(0, 1) at its mean
    assert crps_from_draws(large, 0.0) == pytest.approx(closed_form, abs=0.005)


@pytest.mark.slow
def test_crossval_command_scores_every_subject(run_cli, tmp_path):
    result = run_cli(
        "crossval", BUNDLED_COHORT, "--model", "positive_rate", "--folds", "2", "--out", tmp_path
    )
    assert result.exit_code == 0, result.output
    subjects = pd.read_csv(tmp_path / "kfold_subjects.csv")
    assert len(subjects) == 50 and (subjects["status"] == "ok").all()
    assert (subjects["crps"] > 0).all() and subjects["elpd"].lt(0).all()
    summary = pd.read_csv(tmp_path / "kfold_compare.csv")
    assert summary["crps"].iloc[0] == pytest.approx(subjects["crps"].sum())
    assert "compare the models by crps" in result.stderr  # the elpd reliability warning
