"""The posterior predictive check for new subjects (``analysis.predictive_checks``) and Figure S6.

Run on the thinned fits of ``tests/data/results/fits`` (2 chains x 50 draws) with the bundled
SIMULATED cohort: the models are rebuilt for the cohort, nothing is sampled by MCMC.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr
from scipy.special import expit, logit

from analysis import fig_ppc_new_subjects
from analysis.fit_files import read_fit
from analysis.fit_report import FIT_OUTPUTS
from analysis.predictive_checks import (
    cell_statistics,
    new_subject_check,
    new_subject_seed,
    predictive_row_rates,
    replicate_outcomes,
    subject_level_variables,
)
from models.data import Cohort, load_cohort
from models.registry import MODELS
from models.schema import CohortSpec
from tests.conftest import BUNDLED_COHORT, ROOT

FITS = ROOT / "tests" / "data" / "results" / "fits"
FITTED = sorted(p.parent.name for p in FITS.glob("*/fit.nc") if p.parent.name in MODELS)
COLUMNS = [
    "model",
    "group",
    "subset",
    "statistic",
    "n_subjects",
    "observed",
    "replicated_q05",
    "replicated_q25",
    "replicated_q50",
    "replicated_q75",
    "replicated_q95",
    "observed_quantile",
    "p_value",
    "replicates",
]


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return load_cohort(BUNDLED_COHORT)


def open_fit(name: str) -> xr.DataTree:
    return read_fit(FITS / name / "fit.nc")


def rebuilt(name: str, cohort: Cohort):
    """The fixture fit of ``name`` and its model rebuilt for ``cohort``."""
    idata = open_fit(name)
    return MODELS[name].build(cohort, idata.attrs["prior_set"]), idata


@pytest.fixture(scope="module")
def positive_rate(cohort):
    return rebuilt("positive_rate", cohort)


def paired_cohort() -> Cohort:
    """Two patients seen before and under natalizumab, and one seen once."""
    rows = []
    for subject, patient, group in [
        ("A0", "A", "MS_naive"),
        ("A1", "A", "MS_NTZ"),
        ("B0", "B", "MS_naive"),
        ("B1", "B", "MS_NTZ"),
        ("C0", "C", "MS_naive"),
    ]:
        for subset in ("Th1", "Th17", "Treg"):
            rows.append(
                {
                    "subject_id": subject,
                    "patient_id": patient,
                    "group": group,
                    "subset": subset,
                    "n_cells": 1000,
                    "n_cd49d_pos": 400,
                    "pct_cd49d_pos": 40.0,
                }
            )
    return Cohort.from_frame(pd.DataFrame(rows), CohortSpec(), "paired")


# --- which variables a new subject redraws: found in each model's graph ----------------------


def test_new_subjects_redraw_every_subject_level_variable(cohort):
    found = {
        (name, prior_set): set(
            subject_level_variables(MODELS[name].build(cohort, prior_set), cohort)
        )
        for name, prior_set in [
            ("positive_rate", "default"),
            ("saturation", "default"),
            ("saturation", "uniform_saturation"),
            ("saturation_per_subset", "default"),
            ("exacerbation", "default"),
            ("exacerbation_logit", "default"),
        ]
    }
    assert found == {
        ("positive_rate", "default"): {"subject_logit"},
        ("saturation", "default"): {"subject_probit", "saturation_z"},
        ("saturation", "uniform_saturation"): {"subject_probit", "saturation_unit"},
        ("saturation_per_subset", "default"): {"subject_probit", "saturation_z"},
        ("exacerbation", "default"): {"subject_probit", "saturation_z"},
        ("exacerbation_logit", "default"): {"subject_logit"},
    }


def test_with_repeated_samples_new_patients_redraw_their_vectors_and_visits():
    paired = paired_cohort()
    model = MODELS["saturation"].build(paired)
    assert set(subject_level_variables(model, paired)) == {
        "subject_probit_patient",
        "subject_probit_contrast",
        "saturation_z",
    }


# --- PyMC 6 resamples what sample_vars names, and only that -----------------------------------


def test_pymc_resamples_sample_vars_and_only_copies_var_names(positive_rate):
    """The guard for the whole check: in PyMC 6 ``var_names`` alone copies the trace's subject
    effects (the replayed check); ``sample_vars`` redraws them."""
    model, idata = positive_rate
    fitted = idata["posterior"]["subject_logit"].values
    with model:
        copied = pm.sample_posterior_predictive(
            idata, var_names=["subject_logit"], progressbar=False, random_seed=1
        )
    redrawn = replicate_outcomes(model, idata, resample=["subject_logit"], seed=1)
    assert np.array_equal(copied["posterior_predictive"]["subject_logit"].values, fitted)
    assert not np.allclose(redrawn["posterior_predictive"]["subject_logit"].values, fitted)


def test_new_subject_effects_follow_the_population_distribution(positive_rate, cohort):
    """At each draw the new subject vectors scatter around their group's cell mean with variance
    tau_subject^2 + tau_subject_subset^2 (models/positive_rate.py); the fitted ones need not.
    Tolerance: the mean of 100 draws' ratios has an SD of about 0.02 (50 subjects x 3 subsets,
    correlated within subject); 0.1 is 5 SDs."""
    model, idata = positive_rate
    posterior = idata["posterior"]
    new = replicate_outcomes(model, idata, resample=["subject_logit"], seed=2)
    effects = new["posterior_predictive"]["subject_logit"]
    groups = xr.DataArray(cohort.subjects["group"].astype(str).to_numpy(), dims="subject")
    residual = effects - posterior["cell_mean_logit"].sel(group=groups)
    variance = posterior["tau_subject"] ** 2 + posterior["tau_subject_subset"] ** 2
    ratio = ((residual**2).mean(("subject", "subset")) / variance).mean()
    assert abs(float(ratio) - 1.0) < 0.1


def test_new_occupancies_follow_the_population_distribution(cohort):
    """The treated patients' new occupancies: standard-normal ``saturation_z`` (non-centred),
    8 patients x 100 draws; tolerances 5 SDs."""
    model, idata = rebuilt("saturation_per_subset", cohort)
    resample = subject_level_variables(model, cohort)
    z = replicate_outcomes(model, idata, resample=resample, seed=3)["posterior_predictive"]
    values = z["saturation_z"].values.ravel()
    assert abs(values.mean()) < 5 / np.sqrt(values.size)
    assert abs(np.mean(values**2) - 1) < 5 * np.sqrt(2 / values.size)


@pytest.mark.parametrize("name", ["positive_rate", "saturation_per_subset"])
def test_new_subjects_medians_vary_more_than_replayed_ones(cohort, name):
    """Replayed subjects keep their fitted rates, pinned by thousands of events; new subjects
    are a fresh sample of the population, so their group medians vary far more across draws
    (the 90% ranges 2.5 to 12 times as wide on the fixture fits)."""
    model, idata = rebuilt(name, cohort)
    replayed = replicate_outcomes(model, idata, resample=[], seed=4)
    rates = predictive_row_rates(replayed, "posterior_predictive", cohort)
    replayed_range = cell_statistics(rates, cohort).quantile([0.05, 0.95]).diff().iloc[1]
    check = new_subject_check(model, idata, cohort, seed=4, model_name=name)
    medians = check[check["statistic"] == "median"].set_index(["group", "subset"])
    new_range = medians["replicated_q95"] - medians["replicated_q05"]
    ratio = new_range / replayed_range.reindex(new_range.index)
    assert (ratio > 2).all(), ratio


# --- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FITTED)
def test_check_table_has_one_row_per_group_subset_statistic(cohort, name):
    model, idata = rebuilt(name, cohort)
    table = new_subject_check(model, idata, cohort, seed=5, model_name=name)
    assert list(table.columns) == COLUMNS
    assert len(table) == 4 * 3 * 2
    assert not table.duplicated(["group", "subset", "statistic"]).any()
    assert set(table["statistic"]) == {"median", "iqr"} and set(table["model"]) == {name}
    assert (table["replicates"] == 100).all()
    quantiles = table[[c for c in COLUMNS if c.startswith("replicated_q")]].to_numpy()
    assert (np.diff(quantiles, axis=1) >= 0).all()
    assert table["observed_quantile"].between(0, 1).all() and table["p_value"].between(0, 1).all()
    percentages = cohort.rows.assign(pct=100 * cohort.rows["positive_rate"])
    observed = percentages.groupby(["group", "subset"], observed=True)["pct"]
    medians = table[table["statistic"] == "median"].set_index(["group", "subset"])
    iqr = table[table["statistic"] == "iqr"].set_index(["group", "subset"])
    for (group, subset), values in observed:
        cell = (str(group), str(subset))
        assert medians.at[cell, "observed"] == pytest.approx(values.median())
        assert iqr.at[cell, "observed"] == pytest.approx(
            values.quantile(0.75) - values.quantile(0.25)
        )
        assert medians.at[cell, "n_subjects"] == len(values)


def test_the_check_is_reproducible_from_its_seed(positive_rate, cohort):
    model, idata = positive_rate
    first, again, other = (
        new_subject_check(model, idata, cohort, seed=s, model_name="positive_rate")
        for s in (6, 6, 7)
    )
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert new_subject_seed(2016) == new_subject_seed(2016) != new_subject_seed(2017)


def shifted_cohort(cohort: Cohort, group: str, *, shift: float = 0.0, stretch: float = 1.0):
    """``cohort`` with ``group``'s counts moved on the logit scale: every rate by ``shift``, and
    each subject's distance from its subset's median logit multiplied by ``stretch``."""
    rows = cohort.rows.drop(columns=["has_counts", "positive_rate"]).astype(
        {"group": str, "subset": str}
    )
    chosen = rows["group"] == group
    logits = pd.Series(logit(cohort.rows["positive_rate"].to_numpy()), index=rows.index)
    centre = logits[chosen].groupby(rows.loc[chosen, "subset"]).transform("median")
    moved = centre + stretch * (logits[chosen] - centre) + shift
    positives = np.round(rows.loc[chosen, "n_cells"] * expit(moved))
    rows.loc[chosen, "n_cd49d_pos"] = positives
    rows.loc[chosen, "pct_cd49d_pos"] = 100 * positives / rows.loc[chosen, "n_cells"]
    return Cohort.from_frame(rows, cohort.spec, f"{cohort.source}, {group} moved")


@pytest.mark.parametrize(
    ("statistic", "moved"),
    [("median", {"shift": 2.0}), ("iqr", {"stretch": 4.0})],
)
def test_a_cohort_far_from_the_population_gets_extreme_quantiles(
    positive_rate, cohort, statistic, moved
):
    """The check can fail: MS_naive's rates moved 2 logits up (or their spread stretched
    fourfold) lie beyond every replicate of the fitted population, while the real cohort's
    same cells lie inside the replicates."""
    _, idata = positive_rate
    far = shifted_cohort(cohort, "MS_naive", **moved)
    checks = {
        label: new_subject_check(
            MODELS["positive_rate"].build(data), idata, data, seed=8, model_name="positive_rate"
        )
        .set_index(["group", "statistic", "subset"])
        .sort_index()
        for label, data in [("real", cohort), ("far", far)]
    }
    real, moved_cells = (checks[k].loc[("MS_naive", statistic)] for k in ("real", "far"))
    assert (moved_cells["observed_quantile"] == 1.0).all() and (moved_cells["p_value"] == 0).all()
    assert real["observed_quantile"].between(0.005, 0.995).all()
    untouched = ["HC", "MS_NTZ", "NMOSD"]
    pd.testing.assert_frame_equal(checks["real"].loc[untouched], checks["far"].loc[untouched])


def test_fit_lists_the_new_subject_check_among_its_outputs():
    assert "ppc_new_subjects.csv" in FIT_OUTPUTS


# --- Figure S6 ----------------------------------------------------------------------------------


def test_figure_writes_pdf_and_png(cohort, tmp_path):
    checks = []
    for name in FITTED:
        model, idata = rebuilt(name, cohort)
        path = tmp_path / name / "ppc_new_subjects.csv"
        path.parent.mkdir()
        new_subject_check(model, idata, cohort, seed=9, model_name=name).to_csv(path, index=False)
        checks.append(path)
    paths = fig_ppc_new_subjects.make(checks, tmp_path / "figS6_ppc_new_subjects")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert paths[0].read_bytes().startswith(b"%PDF")


def test_figure_command_has_help():
    from click.testing import CliRunner

    result = CliRunner().invoke(fig_ppc_new_subjects.main, ["--help"])
    assert result.exit_code == 0 and "ppc_new_subjects.csv" in result.output


def test_figure_reads_only_result_files():
    source = Path(fig_ppc_new_subjects.__file__).read_text(encoding="utf-8")
    assert "sample_posterior_predictive" not in source and "pm.sample" not in source
