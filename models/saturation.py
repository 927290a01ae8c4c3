r"""Latent-expression model of CD49d positive rates under natalizumab (the mechanistic model).

For subject :math:`i` and T-cell subset :math:`s`, the log surface CD49d of a cell is
:math:`\mathrm{Normal}(\mu_{is}, \sigma)`; a cell counts as CD49d+ above the gate (log gate 0),
so the positive rate is :math:`p_{is} = \Phi(\eta_{is})` with :math:`\eta = \mu / \sigma`
(probit units), and

.. math::

    \eta_{i\cdot} \sim \mathrm{Normal}_K\!\left(a_{h(i)\cdot} + T_i\, d_{i\cdot},\
        \tau_c^2 I + \tau_b^2 J\right), \qquad
    d_{is} = \log(1 - \kappa_s \rho_i) / \sigma, \qquad
    n^{+}_{is} \sim \mathrm{Binomial}(n_{is}, p_{is}),

    \rho_i = 0.6 + 0.4\,\mathrm{logit}^{-1}(\mu_u + \omega z_i),\ z_i \sim N(0, 1), \qquad
    \sigma = -\mathrm{E}_\rho \log(1 - \kappa_{\mathrm{ref}} \rho) / \delta.

:math:`h(i)` is the subject's *baseline group*: its own group, except that natalizumab-treated
patients (:math:`T_i = 1`) take the MS_naive location. The drug acts only through
:math:`d_{is}`; a free MS_NTZ location would absorb that shift and leave :math:`\kappa` and
:math:`\rho` informed by their priors alone (a prior on a treated-patient offset from that
location, ``treated_offset``, is the sensitivity analysis of this no-confounding assumption).
:math:`\rho_i` is receptor occupancy,
:math:`\kappa_s` the fraction of detectable CD49d lost per unit occupancy (masking plus
down-modulation), shared by all subsets (``kappa="shared"``) or one per subset
(``kappa="per_subset"``). The spread :math:`\sigma` is one for all subsets, so that the
shared-kappa variant means exactly "the same multiplicative loss everywhere; subsets differ only
in where their expression sits relative to the gate". One :math:`\sigma` is also what lets
positive rates tell per-subset :math:`\kappa_s` apart; the prior set ``per_subset_sigma`` gives
each subset its own (a sensitivity analysis: then :math:`\kappa_s` differ only by their prior).

Parameterisation (the same model, arranged for the sampler):

- location :math:`a` and subject SDs are in probit units (``location_probit``, ``tau_subject``,
  ``tau_subject_subset``); each subject's row of predictors is one centred vector
  (``subject_probit``, ``models.effects``); cohorts with repeated samples of a patient add a
  sample x subset (visit) SD ``tau_visit`` (probit units) and sample each sample's vector;
- occupancy is non-centred (``saturation_z``), because the data say little about a single
  patient's occupancy;
- the model samples :math:`\delta` (``mean_probit_shift``), the treated patients' average loss
  of probit location (reference subset), which the positive rates identify, and derives
  :math:`\sigma`; :math:`\kappa`, :math:`\sigma` and occupancy are identified only through
  :math:`\delta` (their split comes from the priors), and a measured occupancy
  (``saturation_measured``, :math:`\mathrm{Normal}(\rho_i, 0.05)`) separates :math:`\rho`.

Median fluorescence (MFI; optional columns ``mfi_cd49d`` and ``mfi_gate``): the median of a
subset's log CD49d is :math:`\mu_{is} = \sigma_s \eta_{is}` relative to the gate, so
:math:`\log(\mathrm{mfi}_{is} / \mathrm{gate}_{is}) \sim \mathrm{Normal}(\sigma_s \eta_{is},
\mathrm{mfi\_log\_sd})` (``add_mfi_likelihood``). A cohort with MFI rows gets a spread per
subset, whatever the prior set: the MFI identifies each :math:`\sigma_s` and the drug's loss
of log CD49d, :math:`\log(1 - \kappa_s \rho)`, which the rates alone see only divided by
:math:`\sigma_s`. The split of that loss into :math:`\kappa_s` and :math:`\rho` still comes
from the priors (or a measured occupancy), but the ratio of two subsets' losses, and so
``kappa_difference``, no longer rests on the equal-spread assumption.

Rows with only a percentage use ``models.likelihood``'s logit-normal. ``pct_pos[group, subset]``
is the population-average positive rate: over subject effects by the probit-normal identity
:math:`E\,\Phi(a + e) = \Phi(a / \sqrt{1 + \tau_b^2 + \tau_c^2})`, and for MS_NTZ also over the
occupancy distribution (Gauss-Hermite quadrature in :math:`z`). Priors and their sources:
``models.priors.SaturationPriors``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy import optimize
from scipy.special import expit, logit

from models.data import Cohort, log_mfi_ratio
from models.effects import add_subject_predictors, add_visit_sd
from models.likelihood import add_rate_likelihood, row_labels
from models.priors import SATURATION_FLOOR, SATURATION_SPAN, SaturationPriors
from models.schema import GROUPS, MFI_COLUMN, MFI_GATE_COLUMN, NAIVE_GROUP, TREATED_GROUP

KappaVariant = Literal["shared", "per_subset"]
BASELINE_GROUPS: tuple[str, ...] = tuple(g for g in GROUPS if g != TREATED_GROUP)
#: Gauss-Hermite nodes for averaging over the occupancy distribution (standard-normal z).
HERMITE_NODES, HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(32)
HERMITE_WEIGHTS = HERMITE_WEIGHTS / HERMITE_WEIGHTS.sum()
#: Gauss-Legendre nodes on [0, 1] for the uniform-occupancy prior set.
LEGENDRE_NODES, LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(32)
LEGENDRE_NODES, LEGENDRE_WEIGHTS = (LEGENDRE_NODES + 1) / 2, LEGENDRE_WEIGHTS / 2
#: A mean log-loss closer to 0 than this is treated as "no loss" (kappa = 0, the null).
NO_LOSS = 1e-12


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
        ``positive_rate_subject`` (subject, subset), ``pct_pos`` (group, subset), ``sigma``,
        ``saturation`` and ``saturation_mean`` are deterministics.
    """
    priors = spread_for_measurements(priors or SaturationPriors(), cohort, observed=observed)
    with pm.Model(coords=model_coords(cohort)) as model:
        rate, probit = add_latent_expression(model, cohort, priors, kappa=kappa, observed=observed)
        add_rate_likelihood(cohort, rate, observed=observed)
        add_mfi_likelihood(model, cohort, probit, priors, observed=observed)
        add_measured_saturation(model, cohort, priors, observed=observed)
    return model


def spread_for_measurements(
    priors: SaturationPriors, cohort: Cohort, *, observed: bool
) -> SaturationPriors:
    """With MFI rows the spread is one per subset: the MFI identifies each subset's sigma, so
    the equal-spread assumption is not needed (``sigma_per_subset``)."""
    if len(mfi_rows(cohort, observed=observed)):
        return replace(priors, sigma_per_subset=True, sigma_measured=True)
    return priors


def mfi_rows(cohort: Cohort, *, observed: bool) -> np.ndarray:
    """Rows with an MFI reading (both columns); when simulating, rows with a gate value."""
    rows = cohort.rows
    if MFI_GATE_COLUMN not in rows.columns:
        return np.array([], dtype=int)
    given = rows[MFI_GATE_COLUMN].notna()
    if observed:
        given &= rows[MFI_COLUMN].notna() if MFI_COLUMN in rows.columns else False
    return np.flatnonzero(given.to_numpy())


def add_mfi_likelihood(
    model: pm.Model,
    cohort: Cohort,
    probit: pt.TensorVariable,
    priors: SaturationPriors,
    *,
    observed: bool,
) -> None:
    r"""``log(mfi_cd49d / mfi_gate) ~ Normal(sigma_s * probit_is, mfi_log_sd)`` per MFI row.

    The median of a subset's log CD49d is its location :math:`\mu_{is} = \sigma_s \eta_{is}`
    relative to the gate (log gate 0), so a median read beside the positive rate measures
    :math:`\sigma_s` and, between treated and naive patients, the drug's loss of log CD49d
    itself, which positive rates see only in units of :math:`\sigma_s`. When simulating, MFI
    is drawn for every row with a gate value (``mfi_cd49d`` then follows as
    ``mfi_gate * exp(log_mfi_ratio)``).
    """
    rows = mfi_rows(cohort, observed=observed)
    if not len(rows):
        return
    index = cohort.index_arrays()
    subject, subset = index["row_subject"][rows], index["row_subset"][rows]
    sigma = model["sigma"]
    spread = sigma[subset] if sigma.ndim else sigma
    model.add_coord("mfi_row", row_labels(cohort)[rows])
    values = None
    if observed:
        ratio = log_mfi_ratio(cohort.rows.iloc[rows])
        values = pm.Data("observed_log_mfi_ratio", ratio, dims="mfi_row")
    log_sd = pm.HalfNormal("mfi_log_sd", priors.mfi_log_sd_sd)
    pm.Normal(
        "log_mfi_ratio",
        mu=spread * probit[subject, subset],
        sigma=log_sd,
        observed=values,
        dims="mfi_row",
    )


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
    model: pm.Model,
    cohort: Cohort,
    priors: SaturationPriors,
    *,
    kappa: KappaVariant,
    observed: bool = True,
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Location, spread, subject effects and occupancy; returns the (subject, subset) rates and
    their probits."""
    subjects = model.coords["subject"]
    treated_index = np.array([subjects.index(t) for t in model.coords["treated_subject"]], int)
    reference = list(model.coords["subset"]).index(cohort.spec.reference_subset)
    location = pm.Normal(
        "location_probit", 0.0, priors.location_probit_sd, dims=("baseline_group", "subset")
    )
    tau_subject = pm.HalfNormal("tau_subject", priors.tau_subject_sd)
    tau_subject_subset = pm.HalfNormal("tau_subject_subset", priors.tau_subject_subset_sd)
    saturation, occupancy = add_saturation(priors)
    kappa_value = add_kappa(priors, kappa)  # scalar or (1, subset)
    log_loss = pt.log1p(-kappa_value * occupancy[:, None])  # (node, 1 or subset)
    sigma = add_sigma(log_loss, priors, reference if kappa == "per_subset" else 0)
    offset = add_treated_offset(priors)
    shift = pt.log1p(-kappa_value * saturation[:, None]) / sigma + offset  # (treated, 1 or subset)
    n_subsets = len(model.coords["subset"])
    sample_mean = location[baseline_group_codes(cohort)]
    sample_mean = pt.inc_subtensor(
        sample_mean[treated_index], pt.broadcast_to(shift, (len(treated_index), n_subsets))
    )
    tau_visit = add_visit_sd(cohort, priors.tau_visit_sd)
    probit = add_subject_predictors(
        model,
        cohort,
        sample_mean,
        tau_subject,
        tau_subject_subset,
        name="subject_probit",
        tau_visit=tau_visit,
        link="probit",
        observed=observed,
    )
    rate = pm.Deterministic(
        "positive_rate_subject", pm.math.invprobit(probit), dims=("subject", "subset")
    )
    spread = tau_subject**2 + tau_subject_subset**2
    total_sd = pt.sqrt(1.0 + (spread if tau_visit is None else spread + tau_visit**2))
    naive_location = location[BASELINE_GROUPS.index(NAIVE_GROUP)][None, :]
    treated_location = naive_location + log_loss / sigma + offset
    treated_rate = mean_over_occupancy(pm.math.invprobit(treated_location / total_sd), priors)
    add_population_rates(location, total_sd, treated_rate)
    return rate, probit


def add_sigma(
    log_loss: pt.TensorVariable, priors: SaturationPriors, reference_column: int
) -> pt.TensorVariable:
    """The SD of log CD49d within a gate, from the sampled mean probit shift ``delta``: one
    for all subsets (``delta`` of the reference subset), or with ``priors.sigma_per_subset``
    one per subset (``delta_s`` per subset)."""
    mean_loss = pt.minimum(mean_over_occupancy(log_loss, priors), -NO_LOSS)  # (1 or subset,)
    shift_prior = (np.log(priors.mean_shift_log_median), priors.mean_shift_log_sd)
    if priors.sigma_measured:
        sigma_prior = (np.log(priors.sigma_log_median), priors.sigma_log_sd)
        sigma = pm.LogNormal("sigma", *sigma_prior, dims="subset")
        pm.Deterministic("mean_probit_shift", -mean_loss / sigma, dims="subset")
        return sigma
    if priors.sigma_per_subset:
        mean_shift = pm.LogNormal("mean_probit_shift", *shift_prior, dims="subset")
        return pm.Deterministic("sigma", -mean_loss / mean_shift, dims="subset")
    mean_shift = pm.LogNormal("mean_probit_shift", *shift_prior)
    return pm.Deterministic("sigma", -mean_loss[reference_column] / mean_shift)


def add_treated_offset(priors: SaturationPriors) -> pt.TensorVariable | float:
    """The treated patients' baseline offset from the MS_naive location (probit, one for all
    subsets):
    0 under the default's no-confounding assumption, ``Normal(0, treated_offset_sd)`` in the
    ``treated_offset`` sensitivity analysis."""
    if priors.treated_offset_sd <= 0:
        return 0.0
    return pm.Normal("treated_offset", 0.0, priors.treated_offset_sd)


def add_population_rates(location, total_sd, treated_rate) -> None:
    """``pct_pos[group, subset]``: population-average positive rates (fractions)."""
    untreated = pm.math.invprobit(location / total_sd)  # (baseline_group, subset)
    rows = [
        untreated[BASELINE_GROUPS.index(g)] if g != TREATED_GROUP else treated_rate for g in GROUPS
    ]
    pm.Deterministic("pct_pos", pt.stack(rows), dims=("group", "subset"))


def mean_over_occupancy(values: pt.TensorVariable, priors: SaturationPriors) -> pt.TensorVariable:
    """Average over the population occupancy distribution of values given at its nodes (axis 0)."""
    weights = LEGENDRE_WEIGHTS if priors.uniform_saturation else HERMITE_WEIGHTS
    return (weights[:, None] * values).sum(axis=0)


def add_saturation(priors: SaturationPriors) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Per-patient occupancy in [0.6, 1] and the population occupancy at the quadrature nodes.

    Returns
    -------
    tuple
        The ``saturation`` deterministic (treated_subject) and occupancy at the nodes of
        ``mean_over_occupancy`` (also the deterministic ``saturation_mean``, their mean).
    """
    if priors.uniform_saturation:
        unit = pm.Uniform("saturation_unit", 0.0, 1.0, dims="treated_subject")
        node_unit = pt.as_tensor(LEGENDRE_NODES)
    else:
        logit_mean = pm.Normal(
            "saturation_logit_mean",
            priors.saturation_logit_mean_mu,
            priors.saturation_logit_mean_sd,
        )
        logit_sd = pm.LogNormal(
            "saturation_logit_sd",
            np.log(priors.saturation_logit_sd_log_median),
            priors.saturation_logit_sd_log_sd,
        )
        z = pm.Normal("saturation_z", 0.0, 1.0, dims="treated_subject")
        unit = pm.math.invlogit(logit_mean + logit_sd * z)
        node_unit = pm.math.invlogit(logit_mean + logit_sd * HERMITE_NODES)
    occupancy = SATURATION_FLOOR + SATURATION_SPAN * node_unit
    pm.Deterministic("saturation_mean", mean_over_occupancy(occupancy[:, None], priors)[0])
    saturation = pm.Deterministic(
        "saturation", SATURATION_FLOOR + SATURATION_SPAN * unit, dims="treated_subject"
    )
    return saturation, occupancy


def add_kappa(priors: SaturationPriors, variant: KappaVariant) -> pt.TensorVariable:
    """Detectable CD49d lost per unit occupancy: scalar, or a row vector over subsets.

    Per subset, ``logit kappa_s = mu + omega z_s`` (partial pooling, non-centred): a shared
    kappa is the special case ``omega = 0``, and the common level ``mu``, which the rates
    inform only through the prior, is one direction of the posterior instead of a ridge along
    which every ``kappa_s`` moves together.
    """
    if variant == "shared":
        return pm.Beta("kappa", priors.kappa_alpha, priors.kappa_beta)
    if variant == "per_subset":
        mean = pm.Normal("kappa_logit_mean", priors.kappa_logit_mean_mu, priors.kappa_logit_mean_sd)
        spread = pm.HalfNormal("kappa_logit_sd", priors.kappa_logit_sd_sd)
        z = pm.Normal("kappa_z", 0.0, 1.0, dims="subset")
        return pm.Deterministic("kappa", pm.math.invlogit(mean + spread * z), dims="subset")[
            None, :
        ]
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


# --- natural units <-> the model's free variables ---------------------------------------------


def occupancy_moments(logit_mean: float, logit_sd: float) -> tuple[float, float]:
    """Population mean and between-patient SD of occupancy under the logit-normal."""
    unit = expit(logit_mean + logit_sd * HERMITE_NODES)
    occupancy = SATURATION_FLOOR + SATURATION_SPAN * unit
    mean = float(HERMITE_WEIGHTS @ occupancy)
    return mean, float(np.sqrt(HERMITE_WEIGHTS @ (occupancy - mean) ** 2))


def occupancy_logit_parameters(mean: float, sd: float) -> tuple[float, float]:
    """The logit-normal's ``(saturation_logit_mean, saturation_logit_sd)`` for a population
    mean occupancy in (0.6, 1) and a between-patient SD (both in occupancy units).

    Raises
    ------
    ValueError
        If no logit-normal on [0.6, 1] has these moments.
    """
    if not SATURATION_FLOOR < mean < 1.0 or not 0.0 < sd < SATURATION_SPAN / 2:
        raise ValueError(f"no occupancy distribution on [0.6, 1] has mean {mean} and SD {sd}")

    def gap(params):
        got = occupancy_moments(params[0], np.exp(params[1]))
        return [got[0] - mean, got[1] - sd]

    unit = (mean - SATURATION_FLOOR) / SATURATION_SPAN
    start = [logit(unit), np.log(sd / SATURATION_SPAN / (unit * (1 - unit)))]
    solution = optimize.root(gap, start, method="hybr")
    if not solution.success or max(abs(v) for v in gap(solution.x)) > 1e-8:
        raise ValueError(f"no occupancy distribution on [0.6, 1] has mean {mean} and SD {sd}")
    return float(solution.x[0]), float(np.exp(solution.x[1]))


def mean_probit_shift(
    sigma: float, kappa: float | np.ndarray, logit_mean: float, logit_sd: float, reference: int
) -> float:
    """``delta = -E log(1 - kappa_ref rho) / sigma`` for natural-unit parameters (0 if kappa_ref
    is 0: no loss)."""
    kappa_ref = float(np.ravel(kappa)[reference] if np.ndim(kappa) else kappa)
    occupancy = SATURATION_FLOOR + SATURATION_SPAN * expit(logit_mean + logit_sd * HERMITE_NODES)
    return float(-(HERMITE_WEIGHTS @ np.log1p(-kappa_ref * occupancy)) / sigma)
