"""What a plan's effect means on the observable scale, computed by the generating model.

For each scenario of a plan (``alternative`` and ``null``), from the same graph that draws its
trials (``simulations.trials``) with the scenario's parameters fixed:

- ``pct_pos``: the population-average % CD49d+ per arm and subset (the model's ``pct_pos``:
  averaged over subject effects and, under natalizumab, over the occupancy distribution);
- ``ratio_fold_change``: the CD49d ratio (subset over Treg) under natalizumab over that without;
- ``probit_shift``: natalizumab's mean shift of each subset's probit rate,
  ``E_rho log(1 - kappa_s rho) / sigma``, and ``probit_shift_difference``: effector minus Treg
  (positive when Treg lose more; the mechanism endpoint's scale, 0 under one shared kappa);
- ``kappa`` per subset; for the prognosis question the odds ratio of an exacerbation per SD of
  the latent log ratio and the probability of one during follow-up.

A planner can so check what ``kappa = 0.4`` means in % CD49d+ cells before running anything.
Every number is a property of the plan's assumptions, not a finding of any study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pymc as pm
from scipy.special import expit

from models import exacerbation
from models.data import Cohort
from models.priors import SATURATION_FLOOR, SATURATION_SPAN
from models.saturation import HERMITE_NODES, HERMITE_WEIGHTS
from models.schema import NAIVE_GROUP, TREATED_GROUP
from simulations.analyses import endpoint_subset
from simulations.cohort import of_model
from simulations.plan import Plan
from simulations.trials import (
    Cell,
    cohort_config,
    design_rows,
    kappa_variant,
    plan_parameters,
    plan_scenarios,
)


def observable_effect(plan: Plan, *, design_prior: bool = False) -> dict[str, dict]:
    """Each scenario's effect on the observable scale (module docstring), keyed by scenario
    (``design_prior``: the scenarios a run with a design prior has)."""
    scenarios = plan_scenarios(plan, design_prior=design_prior)
    return {
        scenario: scenario_effect(plan, Cell(scenario, plan.trial.n[0])) for scenario in scenarios
    }


@dataclass(frozen=True)
class Population:
    """A scenario's population quantities, unrounded: % CD49d+ (group x subset), kappa and
    mean probit shift per subset, and the parameter values that gave them."""

    pct: np.ndarray
    groups: list[str]
    subsets: list[str]
    present: set[str]
    kappa: np.ndarray
    shifts: dict[str, float]
    log_losses: dict[str, float]
    values: dict

    def pct_of(self, group: str, subset: str) -> float:
        return float(self.pct[self.groups.index(group), self.subsets.index(subset)])

    def ratio_fold_change(self, effector: str, reference: str) -> float:
        """CD49d ratio (effector over reference) under natalizumab over that without."""
        ratio = {
            g: self.pct_of(g, effector) / self.pct_of(g, reference)
            for g in (NAIVE_GROUP, TREATED_GROUP)
        }
        return ratio[TREATED_GROUP] / ratio[NAIVE_GROUP]

    def reduction(self, subset: str) -> float:
        return 1 - self.pct_of(TREATED_GROUP, subset) / self.pct_of(NAIVE_GROUP, subset)


def population(plan: Plan, cell: Cell) -> Population:
    """The population quantities of a cell's scenario, from the generating graph."""
    spec = cohort_config(plan).spec
    values = plan_parameters(plan, cell)
    template = design_rows(plan, cell.n, np.random.default_rng(0))
    cohort = Cohort.from_frame(template, spec, source="design")
    model = exacerbation.build_model(
        cohort, observed=False, kappa=kappa_variant(plan, cell.scenario)
    )
    subsets = list(spec.subsets)
    kappa = np.broadcast_to(np.asarray(values["kappa"], dtype=float), (len(subsets),))
    return Population(
        pct=100 * pm.do(model, of_model(values, model))["pct_pos"].eval(),
        groups=list(model.coords["group"]),
        subsets=subsets,
        present=set(template["group"]),
        kappa=kappa,
        shifts=probit_shifts(values, subsets, spec.reference_subset),
        log_losses=dict(zip(subsets, mean_log_loss(values, subsets), strict=True)),
        values=values,
    )


def scenario_effect(plan: Plan, cell: Cell) -> dict:
    spec = cohort_config(plan).spec
    pop = population(plan, cell)
    arms = [g for g in (NAIVE_GROUP, TREATED_GROUP) if g in pop.present]
    effect: dict = {
        "pct_pos": {arm: {s: round(pop.pct_of(arm, s), 2) for s in pop.subsets} for arm in arms}
    }
    effect["kappa"] = {s: round(float(k), 4) for s, k in zip(pop.subsets, pop.kappa, strict=True)}
    effect["probit_shift"] = {s: round(v, 4) for s, v in pop.shifts.items()}
    reference = spec.reference_subset
    effectors = list(spec.effector_subsets)
    effect["probit_shift_difference"] = {
        f"{e}-{reference}": round(pop.shifts[e] - pop.shifts[reference], 4) for e in effectors
    }
    if plan.trial.design != "prognostic":
        effect["ratio_fold_change"] = {
            f"{e}/{reference}": round(pop.ratio_fold_change(e, reference), 4) for e in effectors
        }
    else:
        log_or = float(pop.values["exacerbation_log_or"])
        effect["exacerbation_odds_ratio_per_sd"] = round(math.exp(log_or), 3)
        effect["exacerbation_probability"] = round(plan.trial.event_probability, 3)
    return effect


def estimand_truths(plan: Plan) -> list[dict]:
    """True value of each endpoint's estimand per scenario, as each analysis family reads it.

    ``ratio_fold_change_*``: log of the population-average ratio fold change (every analysis);
    ``kappa_difference_*``: kappa_Treg - kappa_effector for the Bayesian model, and the
    probit-shift difference (effector minus Treg, the scale the frequentist analyses estimate
    on) for the others; ``differential_reduction_*``: reduction in Treg minus in the effector
    subset; ``exacerbation_log_or``: the plan's log odds ratio per SD of the latent log ratio.
    Rows: ``scenario, endpoint, family`` (``bayes`` or ``frequentist``), ``true_value``,
    ``true_value_of``.
    """
    reference = cohort_config(plan).spec.reference_subset
    families = (
        ("bayes", "frequentist", "mfi") if plan.trial.measures_mfi else ("bayes", "frequentist")
    )
    rows = []
    for scenario in plan_scenarios(plan):
        pop = population(plan, Cell(scenario, plan.trial.n[0]))
        for endpoint in plan.trial.endpoints:
            for family in families:
                value, meaning = endpoint_truth(pop, endpoint, family, reference)
                rows.append(
                    {
                        "scenario": scenario,
                        "endpoint": endpoint,
                        "family": family,
                        "true_value": value,
                        "true_value_of": meaning,
                    }
                )
    return rows


def endpoint_truth(pop: Population, endpoint: str, family: str, reference: str):
    """``(true value, what it is)`` of one endpoint for one analysis family."""
    if endpoint == "exacerbation_log_or":
        return float(pop.values["exacerbation_log_or"]), "log odds ratio per SD, latent log ratio"
    effector = endpoint_subset(endpoint)
    if endpoint.startswith("ratio_fold_change_"):
        return math.log(pop.ratio_fold_change(effector, reference)), (
            "log population-average ratio fold change"
        )
    if endpoint.startswith("differential_reduction_"):
        value = pop.reduction(reference) - pop.reduction(effector)
        return value, "population-average reduction, Treg minus effector"
    if family == "bayes":
        kappa = dict(zip(pop.subsets, pop.kappa, strict=True))
        return float(kappa[reference] - kappa[effector]), "kappa_Treg - kappa_effector"
    if family == "mfi":
        difference = pop.log_losses[effector] - pop.log_losses[reference]
        return difference, "mean loss of log CD49d, effector minus Treg (log units)"
    difference = pop.shifts[effector] - pop.shifts[reference]
    return difference, "mean probit shift, effector minus Treg"


def mean_log_loss(values: dict, subsets: list[str]) -> np.ndarray:
    """Mean loss of log CD49d per subset, ``E_rho log(1 - kappa_s rho)`` (log units)."""
    occupancy = SATURATION_FLOOR + SATURATION_SPAN * expit(
        float(values["saturation_logit_mean"])
        + float(values["saturation_logit_sd"]) * HERMITE_NODES
    )
    kappa = np.broadcast_to(np.asarray(values["kappa"], dtype=float), (len(subsets),))
    return HERMITE_WEIGHTS @ np.log1p(-np.outer(occupancy, kappa))


def probit_shifts(values: dict, subsets: list[str], reference: str) -> dict[str, float]:
    """Mean probit shift per subset, ``E_rho log(1 - kappa_s rho) / sigma`` (0 without loss);
    with a sigma per subset (a plan that measures MFI), each subset's own."""
    log_loss = mean_log_loss(values, subsets)
    if "sigma" in values:
        sigma = np.broadcast_to(np.asarray(values["sigma"], dtype=float), (len(subsets),))
        return {s: float(v / w) for s, v, w in zip(subsets, log_loss, sigma, strict=True)}
    delta = float(values["mean_probit_shift"])
    if delta <= 0:
        return {s: 0.0 for s in subsets}
    sigma = -log_loss[subsets.index(reference)] / delta
    return {s: float(v / sigma) for s, v in zip(subsets, log_loss, strict=True)}


def effect_lines(effect: dict[str, dict]) -> list[str]:
    """A few lines per scenario for the terminal."""
    lines = ["Effect on the observable scale (population averages from the generating model):"]
    for scenario, values in effect.items():
        arms = "; ".join(
            f"{arm} " + ", ".join(f"{s} {v:.1f}" for s, v in pct.items())
            for arm, pct in values["pct_pos"].items()
        )
        lines.append(f"  {scenario}: % CD49d+ {arms}")
        kappa = ", ".join(f"{s} {v:g}" for s, v in values["kappa"].items())
        shift = ", ".join(f"{s} {v:+.3f}" for s, v in values["probit_shift_difference"].items())
        lines.append(f"    kappa {kappa}; probit-shift difference {shift}")
        if "ratio_fold_change" in values:
            fold = ", ".join(f"{s} {v:.3f}" for s, v in values["ratio_fold_change"].items())
            lines.append(f"    CD49d ratio fold change {fold}")
        if "exacerbation_odds_ratio_per_sd" in values:
            lines.append(
                f"    exacerbation odds ratio per SD {values['exacerbation_odds_ratio_per_sd']}, "
                f"probability during follow-up {values['exacerbation_probability']}"
            )
    return lines
