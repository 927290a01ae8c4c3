"""Type-I error of the paired Bayesian direction rule with the visit effect estimated or ignored.

Trials of the paired plan's ``null`` scenario (kappa = 0: natalizumab changes nothing) with the
plan's sample x subset (visit) SD ``visit_sd`` are refitted by the plan's Bayesian analysis
(``positive_rate``, batch backend) twice: as the package fits them (``tau_visit`` estimated,
``models/effects.py``) and with the visit effect left out of the analysis model (a patient's
samples then share its vector exactly, as before the visit effect was modelled). Printed: the
share of trials in which ``P(log ratio fold change > 0) >= 0.975`` (nominal 0.025), with its
Monte Carlo SE, per endpoint and variant, and the trials whose fit failed the gate.

Run from the repository root::

    .venv/bin/python benchmarks/visit_effect_level.py                 # n = 8, 200 trials
    .venv/bin/python benchmarks/visit_effect_level.py --n 16 --trials 100 --visit-sd 0.3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import models.positive_rate
from simulations.bayes import BayesianAnalysis
from simulations.plan import Plan, load_plan
from simulations.trials import Cell, TrialGenerator

PLAN = Path(__file__).resolve().parents[1] / "simulations" / "plans" / "paired.toml"
NOMINAL = 0.025


def null_trials(plan: Plan, n: int, trials: int) -> tuple[list[pd.DataFrame], list[int]]:
    """The plan's null trials at ``n``, seeded as the engine seeds them."""
    return TrialGenerator(plan, Cell("null", n)).draw_replicates(trials)


def rejection_rows(plan: Plan, frames, seeds, variant: str) -> list[str]:
    started = time.perf_counter()
    analysis = BayesianAnalysis(plan, frames[0])
    rows = pd.DataFrame([row for rows in analysis.analyse_batch(frames, seeds) for row in rows])
    seconds = time.perf_counter() - started
    lines = []
    for endpoint, group in rows.groupby("endpoint"):
        ok = group[group["status"] == "ok"]
        rate = ok["success"].mean()
        mcse = np.sqrt(rate * (1 - rate) / len(ok))
        failed = len(group) - len(ok)
        lines.append(
            f"{variant:<22} {endpoint:<28} {rate:.3f} +- {mcse:.3f}  "
            f"({int(ok['success'].sum())} of {len(ok)}; {failed} failed the gate)"
        )
    return [*lines, f"{variant:<22} {len(frames)} refits with compilation: {seconds:.0f} s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="patients per trial (default: 8)")
    parser.add_argument("--trials", type=int, default=200, help="null trials (default: 200)")
    parser.add_argument(
        "--visit-sd", type=float, default=None, help="visit SD (default: the plan's, 0.15)"
    )
    args = parser.parse_args()
    plan = load_plan(PLAN)
    if args.visit_sd is not None:
        raw = plan.model_dump()
        raw["effect"]["visit_sd"] = args.visit_sd
        plan = Plan.model_validate(raw)
    frames, seeds = null_trials(plan, args.n, args.trials)
    print(f"paired null, n = {args.n}, {args.trials} trials; nominal one-sided level {NOMINAL}")
    lines = rejection_rows(plan, frames, seeds, "tau_visit estimated")
    estimated = models.positive_rate.add_visit_sd
    models.positive_rate.add_visit_sd = lambda cohort, prior_sd: None  # the model without it
    try:
        lines += rejection_rows(plan, frames, seeds, "visit effect ignored")
    finally:
        models.positive_rate.add_visit_sd = estimated
    print("\n".join(lines))


if __name__ == "__main__":
    main()
