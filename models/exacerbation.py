r"""Exacerbation among natalizumab-treated patients, joint with the latent-expression model.

For treated patient :math:`i` the latent log CD49d ratio is the mean over effector subsets
:math:`e` (Th1, Th17) of :math:`\log(p_{ie} / p_{i,\mathrm{ref}})`, with :math:`p` the
model's positive rates (``models.saturation``), so measurement error propagates. Standardised
over the cohort's treated patients to :math:`z_i`,

.. math::

    \mathrm{exacerbation}_i \sim \mathrm{Bernoulli}(\mathrm{logit}^{-1}(\alpha + \beta z_i)),

so :math:`\beta` is the log odds ratio per SD of the latent log ratio. Priors and reasons:
``models.priors.ExacerbationPriors``. With 2 events in 8 patients the data say little about
:math:`\beta`; the prior dominates (stated with every fit).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models import positive_rate, saturation
from models.data import Cohort
from models.priors import ExacerbationPriors, SaturationPriors
from models.schema import EXACERBATION_COLUMN, TREATED_GROUP

RateModel = Literal["saturation", "positive_rate"]


def build_model(
    cohort: Cohort,
    priors: SaturationPriors | None = None,
    exacerbation_priors: ExacerbationPriors | None = None,
    *,
    kappa: saturation.KappaVariant = "shared",
    rates: RateModel = "saturation",
    observed: bool = True,
) -> pm.Model:
    """Build the joint latent-expression and exacerbation model.

    Parameters
    ----------
    cohort
        The validated cohort; it must hold at least two treated patients.
    priors, exacerbation_priors
        Prior sets; default ``SaturationPriors()`` and ``ExacerbationPriors()``.
    kappa
        Passed to ``models.saturation.build_model``.
    rates
        ``"saturation"``: positive rates from the latent-expression model (the default);
        ``"positive_rate"``: from the descriptive logit model (``models.positive_rate``, its
        priors), for cohorts of treated patients only, where the latent-expression model's
        untreated location, occupancy and kappa are identified by their priors alone and mix
        slowly (R-hat about 1.04 in simulated prognostic trials of 20 patients).
    observed
        If False, counts and exacerbations are left unobserved, to be simulated.

    Returns
    -------
    pymc.Model
        The saturation model plus ``latent_log_ratio``, ``exacerbation_intercept``,
        ``exacerbation_log_or`` and ``exacerbation`` (dims ``treated_subject``).

    Raises
    ------
    ValueError
        If fewer than two treated patients are in the cohort.
    """
    exacerbation_priors = exacerbation_priors or ExacerbationPriors()
    if rates == "positive_rate":
        model = positive_rate.build_model(cohort, observed=observed)
        model.add_coord("treated_subject", saturation.treated_subjects(cohort))
    else:
        model = saturation.build_model(cohort, priors, kappa=kappa, observed=observed)
    if len(model.coords["treated_subject"]) < 2:
        raise ValueError(f"the exacerbation model needs at least two {TREATED_GROUP} patients")
    with model:
        z = add_standardised_log_ratio(model, cohort)
        intercept = pm.Normal(
            "exacerbation_intercept",
            exacerbation_priors.intercept_mean,
            exacerbation_priors.intercept_sd,
        )
        log_or = pm.Normal("exacerbation_log_or", 0.0, exacerbation_priors.slope_sd)
        logit_p = intercept + log_or * z
        if not observed:
            pm.Bernoulli("exacerbation", logit_p=logit_p, dims="treated_subject")
            return model
        events = observed_exacerbations(cohort)
        known = np.flatnonzero(~np.isnan(events))  # blank only for held-out patients of a fold
        model.add_coord("event_subject", np.array(model.coords["treated_subject"])[known])
        pm.Bernoulli(
            "exacerbation",
            logit_p=logit_p[known],
            observed=pm.Data(
                "observed_exacerbation", events[known].astype("int64"), dims="event_subject"
            ),
            dims="event_subject",
        )
    return model


def add_standardised_log_ratio(model: pm.Model, cohort: Cohort) -> pt.TensorVariable:
    """Latent log CD49d ratio of each treated patient, and its cohort-standardised version."""
    subjects = model.coords["subject"]
    subsets = model.coords["subset"]
    treated = [subjects.index(t) for t in model.coords["treated_subject"]]
    reference = subsets.index(cohort.spec.reference_subset)
    effectors = [subsets.index(e) for e in cohort.spec.effector_subsets]
    log_rate = pt.log(model["positive_rate_subject"][treated])
    log_ratio = pm.Deterministic(
        "latent_log_ratio",
        (log_rate[:, effectors] - log_rate[:, reference][:, None]).mean(axis=1),
        dims="treated_subject",
    )
    return (log_ratio - log_ratio.mean()) / log_ratio.std()


def patients_without_follow_up(cohort: Cohort) -> list[str]:
    """Treated patients whose ``exacerbation`` is blank (no follow-up)."""
    subjects = cohort.subjects
    treated = subjects[subjects["group"] == TREATED_GROUP]
    return treated.loc[treated[EXACERBATION_COLUMN].isna(), "subject_id"].astype(str).tolist()


def follow_up_problem(cohort: Cohort, model: str) -> str | None:
    """Why ``model``, an exacerbation model, cannot fit ``cohort``; None if it can."""
    missing = patients_without_follow_up(cohort)
    if not missing:
        return None
    shown = ", ".join(missing[:10]) + (
        f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    )
    return (
        f"the {model} model needs exacerbation (0 or 1) for every {TREATED_GROUP} patient; "
        f"{len(missing)} have none (no follow-up): {shown}. Give their follow-up, or fit a "
        "model without exacerbations (positive_rate, saturation, saturation_per_subset)"
    )


def observed_exacerbations(cohort: Cohort) -> np.ndarray:
    """Exacerbation (0/1, NaN where withheld) of each treated patient, in model order."""
    subjects = cohort.subjects
    treated = subjects[subjects["group"] == TREATED_GROUP]
    return treated[EXACERBATION_COLUMN].to_numpy(dtype=float)
