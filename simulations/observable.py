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

import numpy as np
import pymc as pm
from scipy.special import expit

from models import exacerbation
from models.data import Cohort
from models.priors import SATURATION_FLOOR, SATURATION_SPAN
from models.saturation import HERMITE_NODES, HERMITE_WEIGHTS
from models.schema import NAIVE_GROUP, TREATED_GROUP
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


def scenario_effect(plan: Plan, cell: Cell) -> dict:
    config = cohort_config(plan)
    spec = config.spec
    values = plan_parameters(plan, cell)
    template = design_rows(plan, cell.n, np.random.default_rng(0))
    cohort = Cohort.from_frame(template, spec, source="design")
    model = exacerbation.build_model(
        cohort, observed=False, kappa=kappa_variant(plan, cell.scenario)
    )
    pct = 100 * pm.do(model, values)["pct_pos"].eval()
    groups, subsets = list(model.coords["group"]), list(spec.subsets)
    present = set(template["group"])
    arms = [g for g in (NAIVE_GROUP, TREATED_GROUP) if g in present]
    effect: dict = {
        "pct_pos": {
            arm: {s: round(float(pct[groups.index(arm), i]), 2) for i, s in enumerate(subsets)}
            for arm in arms
        }
    }
    shifts = probit_shifts(values, subsets, spec.reference_subset)
    kappa = np.broadcast_to(np.asarray(values["kappa"], dtype=float), (len(subsets),))
    effect["kappa"] = {s: round(float(k), 4) for s, k in zip(subsets, kappa, strict=True)}
    effect["probit_shift"] = {s: round(v, 4) for s, v in shifts.items()}
    reference = spec.reference_subset
    effectors = list(spec.effector_subsets)
    effect["probit_shift_difference"] = {
        f"{e}-{reference}": round(shifts[e] - shifts[reference], 4) for e in effectors
    }
    if plan.trial.design != "prognostic":
        naive, treated = (pct[groups.index(g)] for g in (NAIVE_GROUP, TREATED_GROUP))
        ref = subsets.index(reference)
        effect["ratio_fold_change"] = {
            f"{e}/{reference}": round(
                float(
                    (treated[subsets.index(e)] / treated[ref])
                    / (naive[subsets.index(e)] / naive[ref])
                ),
                4,
            )
            for e in effectors
        }
    else:
        log_or = float(values["exacerbation_log_or"])
        effect["exacerbation_odds_ratio_per_sd"] = round(math.exp(log_or), 3)
        effect["exacerbation_probability"] = round(plan.trial.event_probability, 3)
    return effect


def probit_shifts(values: dict, subsets: list[str], reference: str) -> dict[str, float]:
    """Mean probit shift per subset, ``E_rho log(1 - kappa_s rho) / sigma`` (0 without loss)."""
    occupancy = SATURATION_FLOOR + SATURATION_SPAN * expit(
        float(values["saturation_logit_mean"])
        + float(values["saturation_logit_sd"]) * HERMITE_NODES
    )
    kappa = np.broadcast_to(np.asarray(values["kappa"], dtype=float), (len(subsets),))
    log_loss = HERMITE_WEIGHTS @ np.log1p(-np.outer(occupancy, kappa))  # per subset
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
