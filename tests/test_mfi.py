"""Median fluorescence (MFI): its reading in the saturation models, its simulation from the same
graph, and what it identifies that positive rates alone do not."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import crossval, mfi_comparison
from models import saturation
from models.data import Cohort, load_cohort
from models.registry import MODELS
from models.simulate import draw_with_fixed
from simulations.analyses import mann_whitney
from simulations.cohort import (
    DEFAULT_CONFIG,
    CohortConfig,
    ConfigError,
    cohort_csv_text,
    fixed_parameters,
    load_config,
    of_model,
    simulate_cohort,
    with_mfi,
)
from simulations.observable import estimand_truths
from simulations.plan import UNIDENTIFIED, PlanError, load_plan
from simulations.trials import Cell, TrialGenerator
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def mfi_cohort() -> Cohort:
    return mfi_comparison.comparison_cohort()


def test_the_mfi_reading_is_sigma_times_the_subjects_probit(mfi_cohort):
    """Drawn from the graph: log(mfi / gate) - sigma_s * probit(rate_is) is the measurement
    error alone, Normal(0, mfi_log_sd)."""
    config = with_mfi(load_config())
    cohort = mfi_cohort
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
    config = replace(with_mfi(load_config()), candidate_draws=20)  # any draw will do
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
    variants = mfi_comparison.VARIANTS[:2]  # the third (one sigma) is the README's reference
    table = mfi_comparison.compare(mfi_cohort, variants=variants)
    table = table.set_index(["measurements", "sigma_model"])
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


# --- planning with MFI ---------------------------------------------------------------------

MFI_PLAN = ROOT / "simulations" / "plans" / "mechanism_mfi.toml"


def mfi_plan(tmp_path, *, measurements: str, sigma: str = "", n: str = "[24]") -> Path:
    text = MFI_PLAN.read_text(encoding="utf-8")
    text = text.replace('measurements = ["rates", "mfi"]', f"measurements = {measurements}")
    text = text.replace("n = [8, 12, 16, 24, 32, 48, 64]", f"n = {n}")
    text = text.replace("kappa = 0.4\n", f"kappa = 0.4\n{sigma}\n")
    path = tmp_path / "plan.toml"
    path.write_text(text, encoding="utf-8")
    return path


NARROW_TREG = "sigma_by_subset = { Th1 = 1.5, Th17 = 1.5, Treg = 0.9 }"


def test_rates_alone_with_a_sigma_per_subset_are_refused_as_unidentified(run_cli, tmp_path):
    path = mfi_plan(tmp_path, measurements='["rates"]', sigma=NARROW_TREG)
    result = run_cli("power", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{path}: plan: {UNIDENTIFIED}"]
    assert "no n suffices" in UNIDENTIFIED
    assert not (tmp_path / "out").exists()


def test_mfi_serves_only_the_mechanism_question_and_rates_are_always_measured(tmp_path):
    biomarker = (ROOT / "simulations" / "plans" / "cross_sectional.toml").read_text()
    path = tmp_path / "biomarker.toml"
    path.write_text(
        biomarker.replace("[trial]\n", '[trial]\nmeasurements = ["rates", "mfi"]\n'), "utf-8"
    )
    with pytest.raises(PlanError, match="'mfi' serves the mechanism question"):
        load_plan(path)
    with pytest.raises(PlanError, match="measurements must hold 'rates'"):
        load_plan(mfi_plan(tmp_path, measurements='["mfi"]'))


def test_a_plan_that_states_the_default_measurements_keeps_its_hash(tmp_path):
    plain = load_plan(ROOT / "simulations" / "plans" / "mechanism.toml")
    text = (ROOT / "simulations" / "plans" / "mechanism.toml").read_text(encoding="utf-8")
    path = tmp_path / "explicit.toml"
    path.write_text(text.replace("[trial]\n", '[trial]\nmeasurements = ["rates"]\n'), "utf-8")
    assert load_plan(path).result_hash() == plain.result_hash()
    assert load_plan(MFI_PLAN).result_hash() != plain.result_hash()


def test_under_unequal_spreads_the_probit_test_fails_its_level_and_the_mfi_test_keeps_it(
    tmp_path,
):
    """One kappa for all subsets (the null), Treg's spread 0.9 against 1.5: the rates' probit
    contrast moves without any difference in kappa, the log-MFI contrast does not."""
    plan = load_plan(mfi_plan(tmp_path, measurements='["rates", "mfi"]', sigma=NARROW_TREG))
    trials, _ = TrialGenerator(plan, Cell("null", 24)).draw_replicates(200)
    endpoint = "kappa_difference_Treg_Th17"
    rates = [mann_whitney(t, endpoint, alpha=0.025)["success"] for t in trials]
    mfi = [mann_whitney(t, endpoint, alpha=0.025, mfi=True)["success"] for t in trials]
    assert np.mean(rates) > 0.5
    assert np.mean(mfi) <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / len(trials))


def test_the_mfi_tests_truth_is_the_loss_of_log_cd49d():
    """With one sigma, the log-MFI contrast's truth is sigma times the probit one's; under the
    null both are 0."""
    plan = load_plan(MFI_PLAN)
    truths = pd.DataFrame(estimand_truths(plan)).set_index(["scenario", "endpoint", "family"])
    sigma = load_config().parameters["sigma"]
    for endpoint in plan.trial.endpoints:
        probit = truths.loc[("alternative", endpoint, "frequentist"), "true_value"]
        log_units = truths.loc[("alternative", endpoint, "mfi"), "true_value"]
        assert log_units == pytest.approx(sigma * probit, rel=1e-9)
        assert truths.loc[("null", endpoint, "mfi"), "true_value"] == pytest.approx(0, abs=1e-12)


def test_a_configuration_with_gate_values_simulates_mfi_and_names_a_missing_subset(tmp_path):
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    text = text.replace("candidate_draws = 200", "candidate_draws = 20")  # any draw will do
    good = tmp_path / "mfi.toml"
    good.write_text(
        text.replace(
            "[design.events_per_gate]",
            "mfi_gate = { Th1 = 900, Th17 = 900, Treg = 700 }\n\n[design.events_per_gate]",
        ),
        encoding="utf-8",
    )
    config = CohortConfig.from_toml(good)
    assert config.mfi_gate == {"Th1": 900.0, "Th17": 900.0, "Treg": 700.0}
    frame = simulate_cohort(config)
    assert frame["mfi_gate"].tolist() == frame["subset"].map(config.mfi_gate).tolist()
    assert (frame["mfi_cd49d"] > 0).all()
    bad = tmp_path / "bad.toml"
    bad.write_text(
        text.replace(
            "[design.events_per_gate]", "mfi_gate = { Th1 = 900 }\n\n[design.events_per_gate]"
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"design\.mfi_gate must name every subset"):
        CohortConfig.from_toml(bad)
