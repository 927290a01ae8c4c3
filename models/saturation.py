r"""Latent-expression model of CD49d positive rates under natalizumab (the mechanistic model).

For subject :math:`i` in group :math:`g(i)` and T-cell subset :math:`s`, the log surface CD49d
of a cell is :math:`\mathrm{Normal}(\mu_{is}, \sigma_s)`; a cell counts as CD49d+ above the gate
(log gate 0), so the positive rate is :math:`p_{is} = \Phi(\mu_{is} / \sigma_s)`, with

.. math::

    \mu_{is} = m_{g(i),s} + b_i + c_{is} + T_i \log(1 - \kappa_s \rho_i), \qquad
    b_i \sim N(0, \tau_b),\ c_{is} \sim N(0, \tau_c) \text{ (non-centred)},

    \rho_i = 0.6 + 0.4\,u_i,\ u_i \sim \mathrm{Beta}(\bar u \phi, (1 - \bar u)\phi), \qquad
    n^{+}_{is} \sim \mathrm{Binomial}(n_{is}, p_{is}),

where :math:`T_i = 1` for natalizumab-treated patients, :math:`\rho_i` is receptor occupancy and
:math:`\kappa_s` the fraction of detectable CD49d lost per unit occupancy (masking plus
down-modulation), shared by all subsets (``kappa="shared"``) or one per subset
(``kappa="per_subset"``). A measured occupancy, where given, is
:math:`\mathrm{Normal}(\rho_i, 0.05)`. Priors and their sources: ``models.priors.SaturationPriors``.

The same graph simulates cohorts (``models.simulate`` fixes parameters with ``pm.do``) and, in
later releases, is fitted; no other code writes this likelihood.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.data import Cohort
from models.priors import SATURATION_FLOOR, SATURATION_SPAN, SaturationPriors
from models.schema import TREATED_GROUP

KappaVariant = Literal["shared", "per_subset"]


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
        The validated cohort (its counts are used only when ``observed``).
    priors
        Prior set; defaults to ``SaturationPriors()``.
    kappa
        ``"shared"``: one kappa for all subsets; ``"per_subset"``: one per subset.
    observed
        If False, the counts are left unobserved so that the model simulates them (the design's
        ``n_cells`` are still used).

    Returns
    -------
    pymc.Model
        With dims ``subject``, ``subset``, ``group``, ``treated_subject`` and ``row``.

    Raises
    ------
    ValueError
        If ``observed`` and some rows have only a percentage (the logit-normal likelihood for
        such rows is not part of this model yet).
    """
    priors = priors or SaturationPriors()
    with pm.Model(coords=model_coords(cohort)) as model:
        add_latent_expression(model, cohort, priors, kappa=kappa)
        add_count_likelihood(model, cohort, observed=observed)
        add_measured_saturation(model, cohort, priors, observed=observed)
    return model


def model_coords(cohort: Cohort) -> dict[str, list[str]]:
    coords = cohort.coords()
    coords["treated_subject"] = treated_subjects(cohort)
    coords["row"] = [f"{r.subject_id}:{r.subset}" for r in cohort.rows.itertuples()]
    return coords


def treated_subjects(cohort: Cohort) -> list[str]:
    subjects = cohort.subjects
    return subjects.loc[subjects["group"] == TREATED_GROUP, "subject_id"].astype(str).tolist()


def add_latent_expression(
    model: pm.Model, cohort: Cohort, priors: SaturationPriors, *, kappa: KappaVariant
) -> None:
    """Add location, spread, subject effects and occupancy; defines ``positive_rate_subject``."""
    index = cohort.index_arrays()
    subjects = model.coords["subject"]
    treated_index = np.array([subjects.index(t) for t in model.coords["treated_subject"]], int)

    location = pm.Normal("location", 0.0, priors.location_sd, dims=("group", "subset"))
    sigma = pm.LogNormal(
        "sigma", np.log(priors.sigma_log_median), priors.sigma_log_sd, dims="subset"
    )
    tau_subject = pm.HalfNormal("tau_subject", priors.tau_subject_sd)
    tau_subject_subset = pm.HalfNormal("tau_subject_subset", priors.tau_subject_subset_sd)
    subject_z = pm.Normal("subject_z", 0.0, 1.0, dims="subject")
    subject_subset_z = pm.Normal("subject_subset_z", 0.0, 1.0, dims=("subject", "subset"))

    saturation = add_saturation(priors)
    kappa_value = add_kappa(priors, kappa)
    log_retained = pt.zeros((len(subjects), len(model.coords["subset"])))
    log_retained = pt.set_subtensor(
        log_retained[treated_index], pt.log1p(-kappa_value * saturation[:, None])
    )
    mu = (
        location[index["subject_group"]]
        + tau_subject * subject_z[:, None]
        + tau_subject_subset * subject_subset_z
        + log_retained
    )
    pm.Deterministic(
        "positive_rate_subject", pm.math.invprobit(mu / sigma), dims=("subject", "subset")
    )


def add_saturation(priors: SaturationPriors) -> pt.TensorVariable:
    """Per-patient occupancy in [0.6, 1]: a scaled Beta with hierarchical mean and concentration."""
    mean_unit = pm.Beta(
        "saturation_mean_unit", priors.saturation_mean_alpha, priors.saturation_mean_beta
    )
    concentration = pm.LogNormal(
        "saturation_concentration",
        np.log(priors.saturation_concentration_log_median),
        priors.saturation_concentration_log_sd,
    )
    unit = pm.Beta(
        "saturation_unit",
        mean_unit * concentration,
        (1.0 - mean_unit) * concentration,
        dims="treated_subject",
    )
    pm.Deterministic("saturation_mean", SATURATION_FLOOR + SATURATION_SPAN * mean_unit)
    return pm.Deterministic(
        "saturation", SATURATION_FLOOR + SATURATION_SPAN * unit, dims="treated_subject"
    )


def add_kappa(priors: SaturationPriors, variant: KappaVariant) -> pt.TensorVariable:
    """Detectable CD49d lost per unit occupancy: scalar, or a row vector over subsets."""
    if variant == "shared":
        return pm.Beta("kappa", priors.kappa_alpha, priors.kappa_beta)
    if variant == "per_subset":
        return pm.Beta("kappa", priors.kappa_alpha, priors.kappa_beta, dims="subset")[None, :]
    raise ValueError(f"unknown kappa variant {variant!r}: use 'shared' or 'per_subset'")


def add_count_likelihood(model: pm.Model, cohort: Cohort, *, observed: bool) -> None:
    """Binomial counts per row (subject x subset)."""
    rows = cohort.rows
    if observed and not rows["has_counts"].all():
        raise ValueError(
            "rows with only pct_cd49d_pos need the logit-normal likelihood, "
            "which this model does not have yet; give n_cells and n_cd49d_pos"
        )
    index = cohort.index_arrays()
    rate = model["positive_rate_subject"][index["row_subject"], index["row_subset"]]
    n_cells = pm.Data("n_cells", rows["n_cells"].to_numpy(dtype="int64"), dims="row")
    counts = rows["n_cd49d_pos"].to_numpy(dtype="int64") if observed else None
    pm.Binomial("n_cd49d_pos", n=n_cells, p=rate, observed=counts, dims="row")


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
