"""The sample x subset (visit) effect of the paired design: its density, generator and power."""

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.data import Cohort
from models.effects import helmert_contrasts, patient_structure, visit_centring
from models.fit import SamplerSettings, fit_gated
from models.positive_rate import build_model
from models.schema import CohortSpec
from simulations.analyses import frequentist_rows
from simulations.plan import Plan, load_plan
from simulations.sensitivity import variations
from simulations.trials import Cell, TrialGenerator, cohort_config

ALPHA = 0.025
ROOT = Path(__file__).resolve().parents[1]


def marginal_covariance(subject_patient, k, tau_shared, tau_own, tau_visit):
    """Covariance of all samples' predictors, flattened (sample, subset), written out."""
    samples = len(subject_patient)
    same_patient = np.equal.outer(subject_patient, subject_patient).astype(float)
    eye_k, eye_n = np.eye(k), np.eye(samples)
    return (
        tau_shared**2 * np.kron(same_patient, np.ones((k, k)))
        + tau_own**2 * np.kron(same_patient, eye_k)
        + tau_visit**2 * np.kron(eye_n, eye_k)
    )


def mixed_cohort(n_cells: int, seed: int) -> Cohort:
    """Six samples of three patients (2, 1 and 3 samples), counts drawn at ``n_cells``."""
    rng = np.random.default_rng(seed)
    samples = [("A", "MS_naive"), ("A", "MS_NTZ"), ("B", "MS_naive")]
    samples += [("C", "MS_naive"), ("C", "MS_NTZ"), ("C", "MS_NTZ")]
    rows = []
    for i, (patient, group) in enumerate(samples):
        for subset in ("Th1", "Th17", "Treg"):
            positive = int(rng.binomial(n_cells, rng.uniform(0.2, 0.8)))
            rows.append(
                {
                    "subject_id": f"S{i}",
                    "patient_id": patient,
                    "group": group,
                    "subset": subset,
                    "n_cells": n_cells,
                    "n_cd49d_pos": positive,
                    "pct_cd49d_pos": 100 * positive / n_cells,
                }
            )
    return Cohort.from_frame(pd.DataFrame(rows), CohortSpec(), "mixed")


def sampled_point(cohort: Cohort, model, y: np.ndarray, mu: np.ndarray, taus) -> tuple:
    """The model's coordinates of predictors ``y``: patient means and scaled contrasts, and the
    contrasts' centring weights."""
    _, labels, subject_patient, _ = patient_structure(cohort)
    contrasts, _ = helmert_contrasts(subject_patient, labels)
    with model:
        weight = visit_centring(cohort, contrasts, "logit", observed=True).eval()
    counts = np.bincount(subject_patient)
    means = np.stack([y[subject_patient == p].mean(axis=0) for p in range(len(counts))])
    mean = contrasts @ mu
    scaled = weight * mean + (contrasts @ y - mean) / taus[2] ** (1 - weight)
    return means, scaled, weight, counts


def test_every_centring_weight_gives_the_marginal_multivariate_normal():
    """Patients with 2, 1 and 3 samples: whatever the data's centring weights (gates of 100 or
    of 10^6 cells give different ones), the model's density of its coordinates equals scipy's
    normal density of the predictors, patient and visit effects integrated out, times the
    Jacobians (the Helmert rotation and the contrasts' scaling): the weights change the
    coordinates, never the model."""
    rng = np.random.default_rng(4)
    weights = {}
    for n_cells, seed in [(100, 1), (10**6, 2)]:
        cohort = mixed_cohort(n_cells, seed)
        model = build_model(cohort)
        terms = [model["subject_logit_patient"], model["subject_logit_contrast"]]
        logp = model.compile_logp(vars=terms, jacobian=False)
        (predictor_graph,) = model.replace_rvs_by_values([model["subject_logit"]])
        predictors = model.compile_fn(predictor_graph, on_unused_input="ignore")
        group_codes = cohort.index_arrays()["subject_group"]
        for taus in [(0.3, 0.2, 0.15), (0.8, 0.1, 0.6), (0.05, 0.5, 0.02)]:
            cell_mean = rng.normal(size=(4, 3))
            mu = cell_mean[group_codes]
            y = mu + rng.normal(size=mu.shape)
            means, scaled, weight, counts = sampled_point(cohort, model, y, mu, taus)
            point = {
                "cell_mean_logit": cell_mean,
                "tau_subject_log__": np.log(taus[0]),
                "tau_subject_subset_log__": np.log(taus[1]),
                "tau_visit_log__": np.log(taus[2]),
                "subject_logit_patient": means,
                "subject_logit_contrast": scaled,
            }
            cov = marginal_covariance(cohort.patient_index()[2], 3, *taus)
            expected = stats.multivariate_normal(mu.ravel(), cov).logpdf(y.ravel())
            expected += 1.5 * np.log(counts).sum() + ((1 - weight) * np.log(taus[2])).sum()
            assert logp(point) == pytest.approx(expected, rel=1e-10)
            used = ("cell_mean_logit", "tau_visit_log__", *(t.name for t in terms))
            rebuilt = predictors({name: point[name] for name in used})
            np.testing.assert_allclose(rebuilt, y, atol=1e-12)
        weights[n_cells] = weight
    assert not np.allclose(weights[100], weights[10**6])


@pytest.mark.slow
def test_paired_samples_without_visit_variation_pass_the_gate():
    """Paired trials whose true visit SD is 0, where the centred form is a funnel (before the
    partial non-centring, nutpie failed the gate on all three of these seeds' trials: R-hat
    of ``tau_visit`` 1.03, bulk ESS 147-303): fitted as ``cd49d fit`` fits them (nutpie,
    low-rank mass matrix), each passes the gate at the first target acceptance."""
    plan = paired_plan(0.0)
    generator = TrialGenerator(plan, Cell("alternative", 8))
    spec = cohort_config(plan).spec
    for seed in (1000, 1001, 1002):
        cohort = Cohort.from_frame(generator.draw(seed), spec, "paired trial")
        settings = SamplerSettings().for_cohort(cohort)
        result = fit_gated(partial(build_model, cohort), settings, seed=seed, with_checks=False)
        assert result.passed and result.attempts == [settings.target_accept], result.report


def paired_plan(visit_sd: float, *, kappa: float = 0.3, n: int = 8, reps: int = 200) -> Plan:
    return Plan.model_validate(
        {
            "name": "visit",
            "root_seed": 11,
            "trial": {"design": "paired", "n": [n], "endpoints": ["ratio_fold_change_Th17_Treg"]},
            "effect": {"kappa": kappa, "visit_sd": visit_sd},
            "replicates": {"initial": reps, "null": reps, "per_task": 25},
            "analysis": {"bayesian": {"enabled": False}},
        }
    )


def probit_changes(trial: pd.DataFrame) -> pd.DataFrame:
    """Per patient and subset: probit rate under natalizumab minus before."""
    rates = trial.assign(probit=stats.norm.ppf(trial["n_cd49d_pos"] / trial["n_cells"]))
    wide = rates.pivot_table(index=["patient_id", "subset"], columns="group", values="probit")
    return (wide["MS_NTZ"] - wide["MS_naive"]).unstack("subset")


def test_the_generator_draws_the_visit_effect_of_the_plan():
    """With 300 paired patients the variance of the within-patient change (centred per subset)
    is the binomial noise without a visit effect, and grows by 2 tau_visit^2 with one; a
    cross-sectional or single-sample cohort's model has no ``tau_visit``."""
    sigma = cohort_config(paired_plan(0.0)).parameters["sigma"]
    variances = {}
    for visit_sd in (0.0, 0.6):
        plan = paired_plan(visit_sd, kappa=0.0, n=300)
        trial = TrialGenerator(plan, Cell("alternative", 300)).draw(5)
        variances[visit_sd] = probit_changes(trial).var()
    added = variances[0.6] - variances[0.0]
    expected = 2 * (0.6 / sigma) ** 2
    assert np.all(np.abs(added / expected - 1) < 0.3), (added, expected)
    assert np.all(variances[0.0] < 0.25 * expected)
    generator = TrialGenerator(paired_plan(0.15), Cell("alternative", 8))
    assert "tau_visit" in generator.base
    spec = cohort_config(paired_plan(0.15)).spec
    paired = Cohort.from_frame(generator.draw(1), spec, "paired trial")
    assert "tau_visit" in build_model(paired).named_vars
    single = Cohort.from_frame(generator.draw(1).drop(columns="patient_id"), spec, "one each")
    assert "tau_visit" not in build_model(single).named_vars


def rejection_rates(plan: Plan, scenario: str, *, mixed: bool = False) -> dict[str, float]:
    """Share of trials each frequentist analysis rejects at one-sided 0.025."""
    n = plan.trial.n[0]
    frames, _ = TrialGenerator(plan, Cell(scenario, n)).draw_replicates(plan.replicates.initial)
    rows = []
    for frame in frames:
        rows += frequentist_rows(
            frame,
            design="paired",
            endpoints=list(plan.trial.endpoints),
            alpha=ALPHA,
            mixed=mixed,
        )
    frame = pd.DataFrame(rows)
    assert (frame["status"] == "ok").all(), frame["error_message"].value_counts()
    return frame.groupby("analysis")["success"].mean().to_dict()


@pytest.mark.slow
def test_paired_power_falls_as_the_visit_effect_grows_and_the_level_holds():
    """n = 8, 200 trials per value: the Wilcoxon signed-rank test's power falls with
    ``visit_sd`` (by more than 3 Monte Carlo SEs at each step), and under the null with the
    largest visit effect the signed-rank test and the mixed model reject within 3 MCSE of
    the nominal 0.025."""
    power = [rejection_rates(paired_plan(v), "alternative")["wilcoxon"] for v in (0.0, 0.15, 0.6)]
    mcse = [np.sqrt(p * (1 - p) / 200) for p in power]
    assert power[0] - power[1] > 3 * np.hypot(mcse[0], mcse[1]), power
    assert power[1] - power[2] > 3 * np.hypot(mcse[1], mcse[2]), power
    levels = rejection_rates(paired_plan(0.6), "null", mixed=True)
    assert set(levels) == {"wilcoxon", "mixed_model"}
    for analysis, level in levels.items():
        assert level <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 200), (analysis, level)


def test_visit_sd_is_varied_only_for_the_paired_design():
    paired = paired_plan(0.15)
    assert variations(paired, [("visit_sd", [0.0, 0.3])])["visit_sd"] == [0.0, 0.3]
    raw = paired.model_dump()
    raw["trial"]["design"] = "cross_sectional"
    cross = Plan.model_validate(raw)
    with pytest.raises(ValueError, match="visit_sd is the variation between a patient's"):
        variations(cross, [("visit_sd", [0.3])])


@pytest.mark.validation
def test_the_bayesian_direction_rule_holds_its_level_with_the_visit_effect():
    """200 paired null trials at n = 8 with the plan's visit effect, refitted by the plan's
    Bayesian analysis (``tau_visit`` estimated): each endpoint's rejection rate lies within
    3 MCSE of the nominal 0.025 (with the visit effect left out of the analysis model it was
    0.22, ``benchmarks/visit_effect_level.py``), and at most 2% of the fits fail the gate."""
    from simulations.bayes import BayesianAnalysis

    plan = load_plan(ROOT / "simulations" / "plans" / "paired.toml")
    frames, seeds = TrialGenerator(plan, Cell("null", 8)).draw_replicates(200)
    analysis = BayesianAnalysis(plan, frames[0])
    rows = pd.DataFrame([row for rows in analysis.analyse_batch(frames, seeds) for row in rows])
    assert (rows["status"] != "ok").mean() <= 0.02
    ok = rows[rows["status"] == "ok"]
    for endpoint, group in ok.groupby("endpoint"):
        limit = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(group))
        assert group["success"].mean() <= limit, (endpoint, group["success"].mean())
