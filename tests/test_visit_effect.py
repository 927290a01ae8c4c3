"""The sample x subset (visit) effect of the paired design: its density, generator and power."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.data import Cohort
from models.effects import visit_logp
from models.positive_rate import build_model
from simulations.analyses import frequentist_rows
from simulations.plan import Plan, load_plan
from simulations.seeds import replicate_seeds
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


def test_visit_density_is_the_marginal_multivariate_normal():
    """Patients with 2, 1 and 3 samples: the closed form equals scipy's normal density of the
    stacked predictors with the patient and visit effects integrated out."""
    rng = np.random.default_rng(4)
    subject_patient = np.array([0, 0, 1, 2, 2, 2])
    k = 3
    mu = rng.normal(size=(len(subject_patient), k))
    value = mu + rng.normal(size=mu.shape)
    for taus in [(0.3, 0.2, 0.15), (0.8, 0.1, 0.6), (0.05, 0.5, 0.02)]:
        ours = visit_logp(subject_patient, value, mu, *taus).eval()
        cov = marginal_covariance(subject_patient, k, *taus)
        expected = stats.multivariate_normal(mu.ravel(), cov).logpdf(value.ravel())
        assert ours == pytest.approx(expected, rel=1e-10)


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
    generator = TrialGenerator(plan, Cell(scenario, n))
    rows = []
    for rep in range(plan.replicates.initial):
        seeds = replicate_seeds(plan.root_seed, plan.result_hash(), scenario, n, rep)
        rows += frequentist_rows(
            generator.draw(seeds.data),
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
    power = [rejection_rates(paired_plan(v), "alternative")["wilcoxon"] for v in (0.0, 0.3, 0.6)]
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
    generator = TrialGenerator(plan, Cell("null", 8))
    frames, seeds = [], []
    for rep in range(200):
        seed = replicate_seeds(plan.root_seed, plan.result_hash(), "null", 8, rep)
        frames.append(generator.draw(seed.data))
        seeds.append(seed.analysis)
    analysis = BayesianAnalysis(plan, frames[0])
    rows = pd.DataFrame([row for rows in analysis.analyse_batch(frames, seeds) for row in rows])
    assert (rows["status"] != "ok").mean() <= 0.02
    ok = rows[rows["status"] == "ok"]
    for endpoint, group in ok.groupby("endpoint"):
        limit = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(group))
        assert group["success"].mean() <= limit, (endpoint, group["success"].mean())
