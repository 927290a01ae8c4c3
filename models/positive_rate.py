r"""The reference descriptive model: CD49d positive rate per group and subset, logit link.

In brms notation
``n_cd49d_pos | trials(n_cells) ~ 0 + group:subset + (1 | subject_id) + (1 | subject_id:subset)``:

.. math::

    \mathrm{logit}\, p_{is} = \eta_{is}, \qquad
    \eta_{i\cdot} \sim \mathrm{Normal}_3\!\left(\beta_{g(i)\cdot},\ \tau_c^2 I + \tau_b^2 J\right),
    \qquad n^{+}_{is} \sim \mathrm{Binomial}(n_{is}, p_{is}),

the subject effect :math:`\tau_b` and subject x subset effect :math:`\tau_c` of the formula as
one centred vector per subject (``models.effects``: the same model, parameterised so that NUTS
takes a few leapfrog steps per draw).

Priors: ``beta ~ Normal(0, 1.5)`` per group x subset cell (weakly informative on the logit scale:
rates from about 5% to 95% a priori, the issue's specification); ``tau_subject, tau_subject_subset
~ HalfNormal(1)`` (between-subject spread of up to about 2 logits). Cohorts with repeated
samples of a patient (the paired design) add a sample x subset (visit) effect ``tau_visit ~
HalfNormal(0.5)`` (``models.effects``): half the between-subject scale, because within-person
variation of lymphocyte subset frequencies is smaller than between-person variation
(``simulations/configs/visit_variation.md``); only such cohorts identify it. Rows with only a
percentage use ``models.likelihood``'s logit-normal. ``pct_pos[group, subset]`` is the
population-average rate of a sample, the mean of :math:`\mathrm{logit}^{-1}(\beta + e)` over
:math:`e \sim N(0, \sqrt{\tau_b^2 + \tau_c^2 + \tau_v^2})` by Gauss-Hermite quadrature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.data import Cohort
from models.effects import add_subject_predictors, add_visit_sd
from models.likelihood import add_rate_likelihood

#: Gauss-Hermite nodes for averaging over subject effects.
QUADRATURE_NODES = 32


@dataclass(frozen=True)
class PositiveRatePriors:
    """Priors of the descriptive model (reasons in the module docstring)."""

    cell_mean_sd: float = 1.5
    tau_sd: float = 1.0
    tau_visit_sd: float = 0.5


def build_model(
    cohort: Cohort, priors: PositiveRatePriors | None = None, *, observed: bool = True
) -> pm.Model:
    """Build the descriptive logit model for a cohort.

    Parameters
    ----------
    cohort
        The validated cohort.
    priors
        Prior set; defaults to ``PositiveRatePriors()``.
    observed
        If False, outcomes are left unobserved so that the model simulates them.

    Returns
    -------
    pymc.Model
        With dims ``subject``, ``subset`` and ``group``; ``subject_logit`` (per patient) is
        the centred subject vector (with a visit effect: each sample's predictors, a
        deterministic of ``subject_logit_patient`` and ``subject_logit_contrast``);
        ``positive_rate_subject`` and ``pct_pos`` are deterministics.
    """
    priors = priors or PositiveRatePriors()
    index = cohort.index_arrays()
    with pm.Model(coords=cohort.coords()) as model:
        cell_mean = pm.Normal("cell_mean_logit", 0.0, priors.cell_mean_sd, dims=("group", "subset"))
        tau_subject = pm.HalfNormal("tau_subject", priors.tau_sd)
        tau_subject_subset = pm.HalfNormal("tau_subject_subset", priors.tau_sd)
        tau_visit = add_visit_sd(cohort, priors.tau_visit_sd)
        eta = add_subject_predictors(
            model,
            cohort,
            cell_mean[index["subject_group"]],
            tau_subject,
            tau_subject_subset,
            name="subject_logit",
            tau_visit=tau_visit,
            observed=observed,
        )
        rate = pm.Deterministic(
            "positive_rate_subject", pm.math.invlogit(eta), dims=("subject", "subset")
        )
        spread = tau_subject**2 + tau_subject_subset**2
        add_population_rates(
            cell_mean, pt.sqrt(spread if tau_visit is None else spread + tau_visit**2)
        )
        add_rate_likelihood(cohort, rate, observed=observed)
    return model


def add_population_rates(cell_mean: pt.TensorVariable, total_sd: pt.TensorVariable) -> None:
    """``pct_pos[group, subset]``: the mean rate over the subject-effect distribution."""
    nodes, weights = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)
    shifts = np.sqrt(2.0) * nodes  # standard-normal quadrature points
    values = pm.math.invlogit(cell_mean[..., None] + total_sd * shifts)
    pm.Deterministic(
        "pct_pos", (values * (weights / np.sqrt(np.pi))).sum(axis=-1), dims=("group", "subset")
    )
