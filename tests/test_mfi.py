"""Median fluorescence (MFI): its reading in the saturation models, its simulation from the same
graph, and what it identifies that positive rates alone do not."""

import pandas as pd
import pytest
from scipy import stats

from analysis import crossval, mfi_comparison
from models import saturation
from models.data import Cohort, load_cohort
from models.registry import MODELS
from models.simulate import draw_with_fixed
from simulations.cohort import (
    cohort_csv_text,
    fixed_parameters,
    load_config,
    of_model,
    simulate_cohort,
    with_mfi,
)


@pytest.fixture(scope="module")
def mfi_cohort() -> Cohort:
    return mfi_comparison.comparison_cohort()


def test_the_mfi_reading_is_sigma_times_the_subjects_probit():
    """Drawn from the graph: log(mfi / gate) - sigma_s * probit(rate_is) is the measurement
    error alone, Normal(0, mfi_log_sd)."""
    config = with_mfi(load_config())
    cohort = mfi_comparison.comparison_cohort()
    model = MODELS["saturation"].build(cohort, observed=False)
    values = of_model(fixed_parameters(config), model)
    draws = draw_with_fixed(
        model, values, ["positive_rate_subject", "log_mfi_ratio"], draws=20, seed=3
    )
    index = cohort.index_arrays()
    rates = draws["positive_rate_subject"][:, index["row_subject"], index["row_subset"]]
    sigma = config.parameters["sigma"]
    residual = draws["log_mfi_ratio"] - sigma * stats.norm.ppf(rates)
    assert abs(residual.mean()) < 0.01
    assert residual.std() == pytest.approx(config.parameters["mfi_log_sd"], rel=0.05)


def test_a_cohort_with_mfi_samples_a_sigma_per_subset(mfi_cohort):
    with_reading = MODELS["saturation"].build(mfi_cohort)
    assert with_reading["sigma"] in with_reading.free_RVs
    assert with_reading.named_vars_to_dims["sigma"] == ("subset",)
    assert with_reading.named_vars_to_dims["log_mfi_ratio"] == ("mfi_row",)
    rates_only = MODELS["saturation"].build(mfi_comparison.without_mfi(mfi_cohort))
    assert rates_only["sigma"] not in rates_only.free_RVs
    assert "log_mfi_ratio" not in rates_only.named_vars


def test_a_simulated_cohort_with_mfi_is_a_valid_file(tmp_path):
    config = with_mfi(load_config())
    frame = simulate_cohort(config, seed=5)
    path = tmp_path / "cohort.csv"
    path.write_text(cohort_csv_text(frame), encoding="utf-8")
    cohort = load_cohort(path)
    assert len(saturation.mfi_rows(cohort, observed=True)) == len(frame)
    assert set(cohort.rows["mfi_gate"]) == {config.mfi_gate[s] for s in config.spec.subsets}


def test_a_held_out_subject_loses_its_mfi_reading(mfi_cohort):
    subject = str(mfi_cohort.subjects["subject_id"].iloc[0])
    folded = crossval.without_outcomes(mfi_cohort, [subject])
    held_out = folded.rows["subject_id"] == subject
    assert folded.rows.loc[held_out, "mfi_cd49d"].isna().all()
    assert folded.rows.loc[~held_out, "mfi_cd49d"].notna().all()
    expected = len(mfi_cohort.rows) - held_out.sum()
    assert len(saturation.mfi_rows(folded, observed=True)) == expected


def test_mfi_identifies_sigma_and_kappa_difference_that_rates_alone_do_not(mfi_cohort):
    """The README's comparison: with MFI, sigma per subset and kappa_difference contract; from
    rates alone under a sigma per subset, kappa_difference does not (its SD stays the prior's)."""
    table = mfi_comparison.compare(mfi_cohort).set_index(["measurements", "sigma_model"])
    assert (table["status"] == "ok").all(), table["status"].tolist()
    with_mfi_rows = table.loc[("rates+mfi", mfi_comparison.VARIANTS[0].sigma)]
    rates_rows = table.loc[("rates", mfi_comparison.VARIANTS[1].sigma)]

    def of(rows: pd.DataFrame, quantity: str) -> pd.DataFrame:
        return rows[rows["quantity"] == quantity]

    sigma = of(with_mfi_rows, "sigma")
    assert (sigma["contraction"] > 0.99).all()
    assert ((sigma["q2.5"] < sigma["truth"]) & (sigma["truth"] < sigma["q97.5"])).all()
    mfi_difference = of(with_mfi_rows, "kappa_difference")
    rates_difference = of(rates_rows, "kappa_difference")
    assert (mfi_difference["contraction"] > 0.8).all()
    assert (rates_difference["contraction"] < 0.3).all()
    narrower = mfi_difference["posterior_sd"].to_numpy() * 3
    assert (narrower < rates_difference["posterior_sd"].to_numpy()).all()
