"""Graph contracts of the latent-expression model and recovery of fixed parameters by simulation."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logit

from models import exacerbation, saturation
from models.data import Cohort
from models.schema import CohortSpec
from models.simulate import draw_with_fixed

SUBSETS = ("Th1", "Th17", "Treg")


def design(n_per_group: int, n_cells: int = 20_000) -> Cohort:
    rows = [
        {
            "subject_id": f"{g}{k:03d}",
            "group": g,
            "subset": s,
            "n_cells": n_cells,
            "n_cd49d_pos": np.nan,
            "pct_cd49d_pos": np.nan,
            "exacerbation": np.nan,
        }
        for g in ("MS_naive", "MS_NTZ")
        for k in range(n_per_group)
        for s in SUBSETS
    ]
    return Cohort.from_frame(pd.DataFrame(rows), CohortSpec(), source="test design")


def test_model_has_named_dims():
    model = exacerbation.build_model(design(3), observed=False)
    assert model.named_vars_to_dims["location_probit"] == ("baseline_group", "subset")
    assert model.named_vars_to_dims["positive_rate_subject"] == ("subject", "subset")
    assert model.named_vars_to_dims["pct_pos"] == ("group", "subset")
    assert model.named_vars_to_dims["saturation"] == ("treated_subject",)
    assert len(model.coords["treated_subject"]) == 3 and len(model.coords["subject"]) == 6


def no_spread(location, occupancy: float, kappa: float, sigma, *, patients: int) -> dict:
    """Fixed values with no subject spread and every patient at the same occupancy (z = 0);
    ``sigma`` one value or one per subset."""
    return {
        "location_probit": location,
        "tau_subject": 0.0,
        "tau_subject_subset": 0.0,
        "saturation_logit_mean": logit((occupancy - 0.6) / 0.4),
        "saturation_logit_sd": 0.0,
        "saturation_z": np.zeros(patients),
        "kappa": kappa,
        "mean_probit_shift": -np.log(1 - kappa * occupancy) / sigma,
    }


def test_fixed_parameters_are_recovered_from_simulated_counts():
    """With no subject spread, pooled positive rates equal Phi(a + log(1 - kappa rho) / sigma)
    within binomial SE, and pct_pos equals the same closed form."""
    cohort = design(40)
    model = saturation.build_model(cohort, observed=False)
    location = np.tile([0.8, 0.5, -1.2], (3, 1))
    sigma, occupancy, kappa = 1.5, 0.9, 0.7
    fixed = no_spread(location, occupancy, kappa, sigma, patients=40)
    counts = draw_with_fixed(model, fixed, ["n_cd49d_pos"], draws=1, seed=3)["n_cd49d_pos"][0]
    rows = cohort.rows.assign(n_pos=counts)
    pooled = rows.groupby(["group", "subset"], observed=True)["n_pos"].sum() / (40 * 20_000)
    for k, subset in enumerate(SUBSETS):
        naive = stats.norm.cdf(location[1, k])
        treated = stats.norm.cdf(location[1, k] + np.log(1 - kappa * occupancy) / sigma)
        for group, truth in (("MS_naive", naive), ("MS_NTZ", treated)):
            se = np.sqrt(truth * (1 - truth) / (40 * 20_000))
            assert abs(pooled[(group, subset)] - truth) < 4 * se


def test_population_rate_averages_over_subject_effects():
    """pct_pos of an untreated group is Phi(a / sqrt(1 + tau_b^2 + tau_c^2)) (probit-normal)."""
    model = saturation.build_model(design(2), observed=False)
    location = np.tile([0.8, 0.5, -1.2], (3, 1))
    fixed = {"location_probit": location, "tau_subject": 0.4, "tau_subject_subset": 0.3}
    pct = draw_with_fixed(model, fixed, ["pct_pos"], draws=1, seed=1)["pct_pos"][0]
    expected = stats.norm.cdf(location[1] / np.sqrt(1 + 0.4**2 + 0.3**2))
    np.testing.assert_allclose(pct[1], expected, rtol=1e-6)  # invprobit is accurate to ~1e-8


def test_exacerbation_frequency_matches_fixed_intercept():
    """With a zero slope the event rate is logistic(intercept) within Monte Carlo error."""
    model = exacerbation.build_model(design(8), observed=False)
    intercept = -1.1
    events = draw_with_fixed(
        model,
        {"exacerbation_intercept": intercept, "exacerbation_log_or": 0.0},
        ["exacerbation"],
        draws=2000,
        seed=11,
    )["exacerbation"]
    truth = 1 / (1 + np.exp(-intercept))
    mcse = np.sqrt(truth * (1 - truth) / events.size)
    assert abs(events.mean() - truth) < 4 * mcse


def test_unknown_fixed_name_is_refused():
    model = saturation.build_model(design(2), observed=False)
    with pytest.raises(KeyError, match="not variables of the model: gamma"):
        draw_with_fixed(model, {"gamma": 1.0}, ["n_cd49d_pos"], draws=1, seed=1)


def test_command_line_names_match_the_registry_and_samplers():
    from models import fit, names, registry

    assert tuple(registry.MODELS) == names.MODEL_NAMES
    assert registry.PRIOR_SETS == names.PRIOR_SETS
    assert fit.SAMPLERS == names.SAMPLERS


@pytest.mark.parametrize("name", ["positive_rate", "saturation", "exacerbation"])
def test_a_cohort_with_percentage_only_rows_builds_and_scores(name):
    """Rows that give only % CD49d+ enter through their logit (models/likelihood.py)."""
    from models.registry import MODELS

    frame = design(3).rows.copy()
    frame["exacerbation"] = np.where(frame["group"] == "MS_NTZ", 0.0, np.nan)
    frame.loc[:2, "n_cells"] = np.nan
    frame.loc[:2, "pct_cd49d_pos"] = [80.0, 70.0, 12.0]
    frame.loc[3:, "n_cd49d_pos"] = frame.loc[3:, "n_cells"] // 2
    cohort = Cohort.from_frame(frame, CohortSpec(), source="percentages")
    model = MODELS[name].build(cohort)
    labels = [f"{r.subject_id}:{r.subset}" for r in frame.iloc[:3].itertuples()]
    assert list(model.coords["pct_row"]) == labels
    percentages_logp = model.compile_logp(vars=[model["logit_pct"]])
    assert np.isfinite(percentages_logp(model.initial_point()))


def test_identification_reports_each_patients_occupancy_beside_the_globals():
    from models import positive_rate
    from models.sensitivity import global_variables, identification_variables

    cohort = design(2)
    occupancy_model = saturation.build_model(cohort, observed=False)
    names = identification_variables(occupancy_model)
    assert names == [*global_variables(occupancy_model), "saturation"]
    assert occupancy_model.named_vars_to_dims["saturation"] == ("treated_subject",)
    descriptive = positive_rate.build_model(cohort, observed=False)
    assert identification_variables(descriptive) == global_variables(descriptive)


def test_per_subset_sigma_gives_each_subset_its_own_spread():
    """sigma_s = -E log(1 - kappa rho) / delta_s per subset; with every delta_s equal it is the
    default's one sigma, and the treated rates follow each subset's own sigma."""
    from models.registry import MODELS

    cohort = design(40)
    model = MODELS["saturation"].build(cohort, "per_subset_sigma", observed=False)
    assert model.named_vars_to_dims["mean_probit_shift"] == ("subset",)
    assert model.named_vars_to_dims["sigma"] == ("subset",)
    occupancy, kappa, sigmas = 0.9, 0.7, np.array([1.0, 1.5, 2.5])
    location = np.tile([0.8, 0.5, -1.2], (3, 1))
    fixed = no_spread(location, occupancy, kappa, sigmas, patients=40)
    drawn = draw_with_fixed(model, fixed, ["sigma", "pct_pos"], draws=1, seed=2)
    np.testing.assert_allclose(drawn["sigma"][0], sigmas, rtol=1e-9)
    expected = stats.norm.cdf(location[1] + np.log(1 - kappa * occupancy) / sigmas)
    np.testing.assert_allclose(drawn["pct_pos"][0][2], expected, rtol=1e-6)  # MS_NTZ row


def test_treated_offset_moves_treated_patients_only():
    from models.registry import MODELS

    cohort = design(2)
    default = MODELS["saturation_per_subset"].build(cohort, observed=False)
    offset = MODELS["saturation_per_subset"].build(cohort, "treated_offset", observed=False)
    assert "treated_offset" not in default.named_vars
    assert offset.named_vars_to_dims.get("treated_offset") is None  # one for all subsets
    point = {"location_probit": np.zeros((3, 3)), "tau_subject": 0.0, "tau_subject_subset": 0.0}
    without = draw_with_fixed(offset, point | {"treated_offset": 0.0}, ["pct_pos"], draws=1, seed=4)
    shifted = draw_with_fixed(offset, point | {"treated_offset": 0.5}, ["pct_pos"], draws=1, seed=4)
    before, after = without["pct_pos"][0], shifted["pct_pos"][0]
    np.testing.assert_array_equal(before[[0, 1, 3]], after[[0, 1, 3]])  # HC, MS_naive, NMOSD
    assert (after[2] > before[2]).all()  # MS_NTZ: location + 0.5 probit


def test_assumption_sensitivity_tabulates_each_refit_and_records_a_failed_one(monkeypatch):
    """The table machinery on stand-in fits (prior draws): one row per assumption and
    estimand with the ratio of SDs; a refit that fails the gate is one not_converged row."""
    import pymc as pm

    from analysis import fit_report
    from models.diagnostics import DiagnosticReport
    from models.estimands import estimand_table
    from models.fit import FitResult
    from models.registry import MODELS

    cohort = design(4)

    def stand_in(build, settings, thresholds, *, seed, with_checks):
        with build():
            prior = pm.sample_prior_predictive(draws=400, random_seed=seed)
        tree = prior.copy()
        tree["posterior"] = prior["prior"]
        failed = "treated_offset" in getattr(build, "args", ())
        report = DiagnosticReport(passed=not failed, failures=["stand-in failure"] * failed)
        return FitResult(idata=tree, report=report, attempts=[0.9])

    monkeypatch.setattr(fit_report, "fit_gated", stand_in)
    request = fit_report.FitRequest(model_name="saturation_per_subset")
    default = stand_in(
        lambda: MODELS["saturation_per_subset"].build(cohort), None, None, seed=1, with_checks=0
    )
    estimands = estimand_table(default.idata["posterior"].to_dataset(), cohort.spec)
    table = fit_report.assumption_sensitivity(cohort, request, estimands)
    ok = table[table["status"] == "ok"]
    assert set(ok["assumption"]) == {"per_subset_sigma"}
    assert set(ok["estimand"]) == set(fit_report.ASSUMPTION_ESTIMANDS)
    np.testing.assert_allclose(ok["sd_ratio"], ok["sd"] / ok["sd_default"])
    failed = table[table["status"] != "ok"]
    assert failed[["assumption", "status", "failures"]].values.tolist() == [
        ["treated_offset", "not_converged", "stand-in failure"]
    ]
