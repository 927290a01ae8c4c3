r"""Latent-expression model of CD49d positive rates under natalizumab (the mechanistic model).

For subject :math:`i` and T-cell subset :math:`s`, the log surface CD49d of a cell is
:math:`\mathrm{Normal}(\mu_{is}, \sigma)`; a cell counts as CD49d+ above the gate (log gate 0),
so the positive rate is :math:`p_{is} = \Phi(\mu_{is} / \sigma)`, with

.. math::

    \mu_{is} = m_{h(i),s} + b_i + c_{is} + T_i \log(1 - \kappa_s \rho_i), \qquad
    b_i \sim N(0, \tau_b),\ c_{is} \sim N(0, \tau_c) \text{ (non-centred)},

    \rho_i = 0.6 + 0.4\,u_i,\ u_i \sim \mathrm{Beta}(\bar u \phi, (1 - \bar u)\phi), \qquad
    n^{+}_{is} \sim \mathrm{Binomial}(n_{is}, p_{is}).

:math:`h(i)` is the subject's *baseline group*: its own group, except that natalizumab-treated
patients (:math:`T_i = 1`) take the MS_naive location. The drug acts only through
:math:`\log(1 - \kappa_s \rho_i)`; a free MS_NTZ location would absorb that shift and leave
:math:`\kappa` and :math:`\rho` informed by their priors alone. :math:`\rho_i` is receptor
occupancy, :math:`\kappa_s` the fraction of detectable CD49d lost per unit occupancy (masking plus
down-modulation), shared by all subsets (``kappa="shared"``) or one per subset
(``kappa="per_subset"``). The spread :math:`\sigma` is one for all subsets, so that the shared-kappa
variant means exactly "the same multiplicative loss everywhere; subsets differ only in where their
expression sits relative to the gate".

Parameterisation: rates only identify quantities in units of :math:`\sigma`, so the model samples
the probit-scale location :math:`a = m / \sigma` (``location_probit``) and subject SDs
:math:`\tau / \sigma` (``tau_subject``, ``tau_subject_subset``, probit units); :math:`\sigma` then
enters only the treatment shift :math:`\log(1 - \kappa_s \rho_i) / \sigma`. From positive rates
alone :math:`\sigma`, :math:`\kappa` and :math:`\rho` are identified only through that shift
(their split comes from the priors); a measured occupancy (``saturation_measured``,
:math:`\mathrm{Normal}(\rho_i, 0.05)`) separates :math:`\rho`. Rows with only a percentage use
``models.likelihood``'s logit-normal.

``pct_pos[group, subset]`` is the population-average positive rate: over subject effects by the
probit-normal identity :math:`E\,\Phi(a + e) = \Phi(a / \sqrt{1 + \tau_b^2 + \tau_c^2})` (probit
units), and for MS_NTZ also over the occupancy distribution (Gauss-Legendre quadrature).
Priors and their sources: ``models.priors.SaturationPriors``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.data import Cohort
from models.effects import add_subject_effects
from models.likelihood import add_rate_likelihood
from models.priors import SATURATION_FLOOR, SATURATION_SPAN, SaturationPriors
from models.schema import GROUPS, NAIVE_GROUP, TREATED_GROUP

KappaVariant = Literal["shared", "per_subset"]
BASELINE_GROUPS: tuple[str, ...] = tuple(g for g in GROUPS if g != TREATED_GROUP)
#: Gauss-Legendre nodes for averaging over the occupancy distribution.
QUADRATURE_NODES = 48


def build_model(
    cohort: Cohort,
    priors: SaturationPriors | None = None,
    *,
    kappa: KappaVariant = "shared",
    observed: bool = True,
) -> pm.Model:
    """Build the latent-expression model for a cohort.

    Parameters
    ----------
    cohort
        The validated cohort (its outcomes are used only when ``observed``).
    priors
        Prior set; defaults to ``SaturationPriors()``.
    kappa
        ``"shared"``: one kappa for all subsets; ``"per_subset"``: one per subset.
    observed
        If False, outcomes are left unobserved so that the model simulates them.

    Returns
    -------
    pymc.Model
        With dims ``subject``, ``subset``, ``group``, ``baseline_group`` and ``treated_subject``;
        ``positive_rate_subject`` (subject, subset) and ``pct_pos`` (group, subset) are
        deterministics.
    """
    priors = priors or SaturationPriors()
    with pm.Model(coords=model_coords(cohort)) as model:
        rate = add_latent_expression(model, cohort, priors, kappa=kappa)
        add_rate_likelihood(cohort, rate, observed=observed)
        add_measured_saturation(model, cohort, priors, observed=observed)
    return model


def model_coords(cohort: Cohort) -> dict[str, list[str]]:
    coords = cohort.coords()
    coords["baseline_group"] = list(BASELINE_GROUPS)
    coords["treated_subject"] = treated_subjects(cohort)
    return coords


def treated_subjects(cohort: Cohort) -> list[str]:
    subjects = cohort.subjects
    return subjects.loc[subjects["group"] == TREATED_GROUP, "subject_id"].astype(str).tolist()


def baseline_group_codes(cohort: Cohort) -> np.ndarray:
    """Index into BASELINE_GROUPS per subject; treated patients map to MS_naive."""
    groups = cohort.subjects["group"].astype(str).replace(TREATED_GROUP, NAIVE_GROUP)
    return np.array([BASELINE_GROUPS.index(g) for g in groups], dtype=int)


def add_latent_expression(
    model: pm.Model, cohort: Cohort, priors: SaturationPriors, *, kappa: KappaVariant
) -> pt.TensorVariable:
    """Location, spread, subject effects and occupancy; returns the (subject, subset) rates."""
    subjects = model.coords["subject"]
    treated_index = np.array([subjects.index(t) for t in model.coords["treated_subject"]], int)
    location = pm.Normal(
        "location_probit", 0.0, priors.location_probit_sd, dims=("baseline_group", "subset")
    )
    sigma = pm.LogNormal("sigma", np.log(priors.sigma_log_median), priors.sigma_log_sd)
    tau_subject = pm.HalfNormal("tau_subject", priors.tau_subject_sd)
    tau_subject_subset = pm.HalfNormal("tau_subject_subset", priors.tau_subject_subset_sd)
    subject_z, subject_subset_z = add_subject_effects(model, cohort)
    saturation, occupancy_density = add_saturation(priors)
    kappa_value = add_kappa(priors, kappa)

    probit_shift = pt.zeros((len(subjects), len(model.coords["subset"])))
    probit_shift = pt.set_subtensor(
        probit_shift[treated_index], pt.log1p(-kappa_value * saturation[:, None]) / sigma
    )
    probit = (
        location[baseline_group_codes(cohort)]
        + tau_subject * subject_z[:, None]
        + tau_subject_subset * subject_subset_z
        + probit_shift
    )
    rate = pm.Deterministic(
        "positive_rate_subject", pm.math.invprobit(probit), dims=("subject", "subset")
    )
    total_sd = pt.sqrt(1.0 + tau_subject**2 + tau_subject_subset**2)
    add_population_rates(location, sigma, total_sd, kappa_value, occupancy_density)
    return rate


def add_population_rates(location, sigma, total_sd, kappa_value, occupancy_density) -> None:
    """``pct_pos[group, subset]``: population-average positive rates (fractions)."""
    untreated = pm.math.invprobit(location / total_sd)  # (baseline_group, subset)
    nodes, weights = occupancy_density
    occupancy = SATURATION_FLOOR + SATURATION_SPAN * nodes  # (node,)
    shifted = (
        location[BASELINE_GROUPS.index(NAIVE_GROUP)][None, :]
        + pt.log1p(-kappa_value * occupancy[:, None]) / sigma
    )
    treated = (weights[:, None] * pm.math.invprobit(shifted / total_sd)).sum(axis=0)
    rows = [untreated[BASELINE_GROUPS.index(g)] if g != TREATED_GROUP else treated for g in GROUPS]
    pm.Deterministic("pct_pos", pt.stack(rows), dims=("group", "subset"))


def add_saturation(priors: SaturationPriors):
    """Per-patient occupancy in [0.6, 1], and quadrature of the population occupancy density.

    Returns
    -------
    tuple
        The ``saturation`` deterministic (treated_subject) and (nodes, weights) on the unit
        scale, the weights summing to 1 under the population occupancy distribution.
    """
    nodes, legendre_weights = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    nodes, legendre_weights = (nodes + 1) / 2, legendre_weights / 2
    if priors.uniform_saturation:
        unit = pm.Uniform("saturation_unit", 0.0, 1.0, dims="treated_subject")
        weights = pt.as_tensor(legendre_weights)
        pm.Deterministic("saturation_mean", pt.as_tensor(SATURATION_FLOOR + SATURATION_SPAN * 0.5))
    else:
        mean_unit = pm.Beta(
            "saturation_mean_unit", priors.saturation_mean_alpha, priors.saturation_mean_beta
        )
        concentration = pm.LogNormal(
            "saturation_concentration",
            np.log(priors.saturation_concentration_log_median),
            priors.saturation_concentration_log_sd,
        )
        alpha, beta = mean_unit * concentration, (1.0 - mean_unit) * concentration
        unit = pm.Beta("saturation_unit", alpha, beta, dims="treated_subject")
        density = pt.exp(pm.logp(pm.Beta.dist(alpha, beta), pt.as_tensor(nodes)))
        weights = legendre_weights * density
        weights = weights / weights.sum()
        pm.Deterministic("saturation_mean", SATURATION_FLOOR + SATURATION_SPAN * mean_unit)
    saturation = pm.Deterministic(
        "saturation", SATURATION_FLOOR + SATURATION_SPAN * unit, dims="treated_subject"
    )
    return saturation, (pt.as_tensor(nodes), weights)


def add_kappa(priors: SaturationPriors, variant: KappaVariant) -> pt.TensorVariable:
    """Detectable CD49d lost per unit occupancy: scalar, or a row vector over subsets."""
    if variant == "shared":
        return pm.Beta("kappa", priors.kappa_alpha, priors.kappa_beta)
    if variant == "per_subset":
        return pm.Beta("kappa", priors.kappa_alpha, priors.kappa_beta, dims="subset")[None, :]
    raise ValueError(f"unknown kappa variant {variant!r}: use 'shared' or 'per_subset'")


def add_measured_saturation(
    model: pm.Model, cohort: Cohort, priors: SaturationPriors, *, observed: bool
) -> None:
    """Measured occupancy, where a lab gave one, is a noisy reading of the true occupancy."""
    subjects = cohort.subjects
    if "saturation_measured" not in subjects.columns or not observed:
        return
    treated = subjects[subjects["group"] == TREATED_GROUP].reset_index(drop=True)
    measured = treated["saturation_measured"].notna().to_numpy()
    if not measured.any():
        return
    pm.Normal(
        "saturation_measured",
        mu=model["saturation"][np.flatnonzero(measured)],
        sigma=priors.saturation_assay_sd,
        observed=treated.loc[measured, "saturation_measured"].to_numpy(dtype=float),
    )
