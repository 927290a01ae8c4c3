"""What the data identify and how much the priors matter.

- ``identification_table``: for each global parameter (and each patient's occupancy), prior
  SD, posterior SD and the contraction 1 - var_post / var_prior (Schad, Betancourt & Vasishth
  2021). Contraction near 1: the data identify it; near 0: the prior alone informs it.
- ``power_scaling_table``: ArviZ's power-scaling sensitivity (Kallioinen et al. 2024) of the
  posterior to the prior and to the likelihood.
- ``prior_refit_table``: estimands under the default prior next to a refit under another prior.
"""

from __future__ import annotations

import contextlib
import io

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from models.diagnostics import element_labels
from models.fit import CHECKS_COMPILE

#: Contraction at or above this: identified by the data; below WEAK: informed by the prior.
IDENTIFIED, WEAK = 0.5, 0.1
#: Power-scaling sensitivity (ArviZ's cumulative Jensen-Shannon distance) at or above this
#: counts as sensitive: ArviZ's own threshold for its diagnosis.
SENSITIVE = 0.05
#: A posterior SD at or below this (relative to the mean's magnitude, at least 1) is no
#: estimate: the prior set fixes the quantity (``prior_refit_table``).
FIXED_SD = 1e-9
SUBJECT_DIMS = frozenset(
    {"subject", "patient", "treated_subject", "count_row", "pct_row", "visit_contrast"}
)
#: Deterministics reported beside the free variables: population rates and the mechanistic
#: quantities that the saturation models derive (sigma from the mean probit shift, or with MFI
#: the mean probit shift from sigma; per-subset kappa from its pooled logit).
DERIVED_GLOBALS = ("pct_pos", "saturation_mean", "sigma", "mean_probit_shift", "kappa")


#: Per-patient quantities reported beside the global ones in identification.csv. With a shared
#: kappa (and one sigma), a treated patient's occupancy shifts the patient's probit location by
#: the same amount in every subset, exactly as the patient's subject effect does: positive rates
#: cannot tell the two apart, and only the priors on both (and a measured occupancy, where a lab
#: gave one) split them. Its contraction says how far they narrow it.
PER_PATIENT_VARIABLES = ("saturation",)


def identification_variables(model: pm.Model) -> list[str]:
    """The global variables and the per-patient ones whose identification is reported."""
    return global_variables(model) + [n for n in PER_PATIENT_VARIABLES if n in model.named_vars]


def global_variables(model: pm.Model) -> list[str]:
    """Free variables without a subject-level dimension, plus the derived global quantities."""
    names = [
        rv.name
        for rv in model.free_RVs
        if not SUBJECT_DIMS & set(model.named_vars_to_dims.get(rv.name, ()))
    ]
    derived = [n for n in DERIVED_GLOBALS if n in model.named_vars and n not in names]
    return names + derived


def identification_table(idata: xr.DataTree, var_names: list[str]) -> pd.DataFrame:
    """Prior and posterior SD and contraction for each element of the named variables."""
    prior, posterior = idata["prior"].to_dataset(), idata["posterior"].to_dataset()
    rows = []
    for name in var_names:
        if name not in prior or name not in posterior:
            continue
        prior_sd = prior[name].std(("chain", "draw")).values.ravel()
        posterior_sd = posterior[name].std(("chain", "draw")).values.ravel()
        for label, p_sd, q_sd in zip(
            element_labels(posterior[name]), prior_sd, posterior_sd, strict=True
        ):
            contraction = 1 - q_sd**2 / p_sd**2 if p_sd > 0 else np.nan
            rows.append(
                {
                    "parameter": label,
                    "prior_sd": p_sd,
                    "posterior_sd": q_sd,
                    "contraction": contraction,
                    "informed_by": informed_by(contraction),
                }
            )
    return pd.DataFrame(rows)


def informed_by(contraction: float) -> str:
    if np.isnan(contraction):
        return "fixed"
    if contraction >= IDENTIFIED:
        return "data"
    return "data and prior" if contraction >= WEAK else "prior"


def power_scaling_table(model: pm.Model, idata: xr.DataTree, var_names: list[str]) -> pd.DataFrame:
    """Power-scaling sensitivity of the named posterior variables (adds ``log_prior``), with
    ArviZ's ``diagnosis`` and a ``verdict`` in ``identification.csv``'s vocabulary
    (``scaling_verdict``)."""
    if "log_prior" not in idata.children:
        with model, contextlib.redirect_stderr(io.StringIO()):
            pm.stats.compute_log_prior(idata, progressbar=False, compile_kwargs=CHECKS_COMPILE)
    names = [n for n in var_names if n in idata["posterior"].data_vars]
    # Scale only the priors of global parameters: scaling the N(0, 1) priors of hundreds of
    # non-centred subject effects as well flags conflicts that are artefacts of the hierarchy.
    priors = [n for n in names if n in idata["log_prior"].data_vars]
    quiet = io.StringIO()  # psense prints advice to the console; the table already says it
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        table = az.psense_summary(idata, var_names=names, prior_var_names=priors)
    table = pd.DataFrame(table).rename_axis("parameter").reset_index()
    table["verdict"] = [
        scaling_verdict(p, q) for p, q in zip(table["prior"], table["likelihood"], strict=True)
    ]
    return table


def scaling_verdict(prior: float, likelihood: float) -> str:
    """What power-scaling says, in ``informed_by``'s words: ``data`` (scaling the prior barely
    moves the posterior), ``data and prior`` (both move it: ArviZ's "potential prior-data
    conflict", which a parameter that the data inform only jointly with others also shows),
    ``prior`` (only the prior moves it: ArviZ's "strong prior / weak likelihood")."""
    if prior < SENSITIVE:
        return "data"
    return "data and prior" if likelihood >= SENSITIVE else "prior"


def prior_refit_table(
    default: pd.DataFrame, alternative: pd.DataFrame, *, alternative_name: str
) -> pd.DataFrame:
    """Estimands under both priors and the shift in posterior SDs of the default fit."""
    keys = ["estimand", "group", "subset", "unit"]
    merged = default[[*keys, "mean", "sd", "q2.5", "q97.5"]].merge(
        alternative[[*keys, "mean", "sd", "q2.5", "q97.5"]],
        on=keys,
        suffixes=("_default", f"_{alternative_name}"),
    )
    merged["shift_in_sd"] = (merged[f"mean_{alternative_name}"] - merged["mean_default"]) / merged[
        "sd_default"
    ]
    mean, sd = merged[f"mean_{alternative_name}"], merged[f"sd_{alternative_name}"]
    fixed = sd <= FIXED_SD * np.fmax(1.0, mean.abs())
    merged.loc[fixed, "shift_in_sd"] = np.nan
    merged["note"] = [
        f"fixed at {m:.6g} by the {alternative_name} prior set, not estimated: no shift"
        if is_fixed
        else ""
        for m, is_fixed in zip(mean, fixed, strict=True)
    ]
    return merged
