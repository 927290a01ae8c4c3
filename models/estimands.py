"""Estimands of a fit, each computed draw by draw from the posterior (never from plug-in values).

- ``pct_pos`` (group, subset): population-average % CD49d+, the model's ``pct_pos`` x 100.
- ``reduction`` (subset): 1 - pct_pos[MS_NTZ] / pct_pos[MS_naive].
- ``ratio_fold_change`` (effector subset): CD49d ratio in MS_NTZ over that in MS_naive, the ratio
  being pct_pos[subset] / pct_pos[reference subset].
- ``differential_reduction`` (effector subset): reduction[reference] - reduction[subset]; positive
  when the reference (Treg) loses relatively more CD49d+ cells.
- ``saturation_mean`` and ``saturation`` (per patient): receptor occupancy (saturation models).
- ``kappa`` (shared or per subset): detectable CD49d lost per unit occupancy (saturation models).
- ``kappa_difference`` (effector subset; per-subset-kappa model): kappa[reference] -
  kappa[subset]. An interval around 0 means the data are consistent with natalizumab acting alike
  on every subset, Tregs losing more CD49d+ cells only because they sit nearer the gate.
- ``exacerbation_log_or``: log odds ratio of exacerbation per SD of the latent log CD49d ratio.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from models.chain_stats import TAIL_PROBS
from models.schema import NAIVE_GROUP, TREATED_GROUP, CohortSpec

CI_PROB = 0.95
#: The scale of each estimand's values (the ``unit`` column), so that a table cannot mix a
#: percentage with a fraction unnoticed.
UNITS = {
    "pct_pos": "percent",
    "reduction": "fraction",
    "ratio_fold_change": "ratio",
    "differential_reduction": "difference of fractions",
    "saturation_mean": "fraction of receptors",
    "saturation": "fraction of receptors",
    "kappa": "fraction per unit occupancy",
    "kappa_difference": "difference in fraction per unit occupancy",
    "exacerbation_log_or": "log odds ratio per SD of the latent log ratio",
}
COLUMNS = [
    "estimand",
    "group",
    "subset",
    "unit",
    "mean",
    "sd",
    "q2.5",
    "q97.5",
    "prob_positive",
    "rhat",
    "ess_bulk",
    "ess_tail",
]


def estimand_draws(posterior: xr.Dataset, spec: CohortSpec) -> dict[str, xr.DataArray]:
    """Posterior draws of every estimand the fit supports, keyed by estimand name."""
    pct = posterior["pct_pos"]
    treated, naive = pct.sel(group=TREATED_GROUP), pct.sel(group=NAIVE_GROUP)
    reduction = 1 - treated / naive
    reference = spec.reference_subset
    effectors = list(spec.effector_subsets)
    ratio_treated = treated.sel(subset=effectors) / treated.sel(subset=reference)
    ratio_naive = naive.sel(subset=effectors) / naive.sel(subset=reference)
    draws = {
        "pct_pos": 100 * pct,
        "reduction": reduction,
        "ratio_fold_change": ratio_treated / ratio_naive,
        "differential_reduction": reduction.sel(subset=reference) - reduction.sel(subset=effectors),
    }
    for name in ("saturation_mean", "saturation", "kappa", "exacerbation_log_or"):
        if name in posterior:
            draws[name] = posterior[name]
    if "kappa" in posterior and "subset" in posterior["kappa"].dims:
        kappa = posterior["kappa"]
        draws["kappa_difference"] = kappa.sel(subset=reference) - kappa.sel(subset=effectors)
    return draws


def summarise(name: str, draws: xr.DataArray) -> pd.DataFrame:
    """One row per element of an estimand: moments, 95% equal-tailed interval, diagnostics."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant estimand has NaN R-hat
        rhat = az.rhat(draws)
        ess_bulk = az.ess(draws, method="bulk")
        ess_tail = az.ess(draws, method="tail", prob=TAIL_PROBS)  # explicit: not ArviZ's 0.89
    flat = draws.stack(sample=("chain", "draw"))
    other_dims = [d for d in flat.dims if d != "sample"]
    keys = (
        pd.MultiIndex.from_product([flat[d].values for d in other_dims], names=other_dims)
        if other_dims
        else [()]
    )
    rows = []
    for key in keys:
        selector = dict(zip(other_dims, key if isinstance(key, tuple) else (key,), strict=True))
        values = flat.sel(selector).values
        rows.append(
            {
                "estimand": name,
                "group": selector.get("group", selector.get("treated_subject", "")),
                "subset": selector.get("subset", ""),
                "unit": UNITS[name],
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)),
                "q2.5": float(np.quantile(values, (1 - CI_PROB) / 2)),
                "q97.5": float(np.quantile(values, 1 - (1 - CI_PROB) / 2)),
                "prob_positive": float((values > 0).mean()),
                "rhat": float(rhat.sel(selector)),
                "ess_bulk": float(ess_bulk.sel(selector)),
                "ess_tail": float(ess_tail.sel(selector)),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def estimand_table(posterior: xr.Dataset, spec: CohortSpec) -> pd.DataFrame:
    """The ``estimands.csv`` table: columns ``COLUMNS``, one row per estimand element.

    For per-patient ``saturation`` the ``group`` column holds the subject id.
    """
    tables = [summarise(name, draws) for name, draws in estimand_draws(posterior, spec).items()]
    return pd.concat(tables, ignore_index=True)
