r"""Subject effects shared by the models: each patient's row of rates as one centred vector.

A patient's linear predictors across the K subsets (logit or probit scale) are one vector

.. math::

    \eta_{p\cdot} \sim \mathrm{Normal}_K\!\left(m_{p\cdot},\ \tau_c^2 I + \tau_b^2 J\right),

the compound-symmetric normal: a subject effect :math:`b_p \sim N(0, \tau_b)` shared by the
subsets plus a subject x subset effect :math:`c_{ps} \sim N(0, \tau_c)`, marginalised into one
vector. It is the same model as :math:`m + b_p + c_{ps}`, parameterised by the quantities the
data pin down: thousands of events per gate fix each :math:`\eta_{ps}`, whereas the split into
:math:`b_p` and :math:`c_{ps}` is set by the priors alone, a ridge that a sampler with a diagonal
mass matrix follows only with long trajectories (``../shared/notes/geometry.md``: 122 leapfrog
steps per draw with the non-centred split, 7 with this vector).

Samples of one patient (``patient_id``; the paired design) share the patient's vector. Without a
visit effect the patient's first sample carries it and every other sample is shifted by the
difference of the two samples' means (before and under natalizumab, say), so the shared effects
are the within-patient correlation. With a visit effect (``tau_visit``: each sample x subset
deviates from its patient's vector by :math:`\varepsilon_{js} \sim N(0, \tau_v)`,
visit-to-visit biology, staining and gating), every sample has its own predictor vector
:math:`y_j`. For a patient with :math:`m` samples and deviations :math:`D_j = y_j - \mu_j`,
the mean :math:`\bar D` is compound-symmetric with own variance :math:`\tau_c^2 + \tau_v^2 / m`
and shared :math:`\tau_b^2`, and the :math:`m - 1` orthonormal (Helmert) contrasts of the
samples are independent of it, :math:`N(\cdot, \tau_v^2)` per subset. The model samples the
patient mean vector (centred: the data pin it down) and the contrasts, partially non-centred
with weights computed from the data (``visit_centring``): the centred form is right where the
visit SD is well above a gate's binomial noise, the non-centred one where it is far below it
(there the centred form is a funnel, and every paired fit failed the gate when the true
visit SD was 0). The weights change the sampler's coordinates, not the model.
``tau_visit`` is identified only
by patients with two or more samples: models add it only for such cohorts
(``Cohort.shares_patients``).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.data import Cohort
from models.likelihood import empirical_link

#: The dim of the samples' within-patient contrasts (``add_visit_predictors``).
CONTRAST_DIM = "visit_contrast"


def compound_symmetric_logp(value, mu, tau_shared, tau_own):
    """Log density of each row of ``value`` under ``Normal_K(mu, tau_own^2 I + tau_shared^2 J)``.

    Closed form: with ``d = value - mu``, its row mean ``m`` and deviations ``d - m``, the
    quadratic form is ``|d - m|^2 / tau_own^2 + K m^2 / (tau_own^2 + K tau_shared^2)`` and the
    log determinant ``(K - 1) log tau_own^2 + log(tau_own^2 + K tau_shared^2)``.
    """
    k = value.shape[-1]
    d = value - mu
    row_mean = d.mean(axis=-1)
    deviations = d - row_mean[..., None]
    own, total = tau_own**2, tau_own**2 + k * tau_shared**2
    quadratic = (deviations**2).sum(axis=-1) / own + k * row_mean**2 / total
    log_det = (k - 1) * pt.log(own) + pt.log(total)
    return -0.5 * (quadratic + log_det + k * np.log(2 * np.pi))


def compound_symmetric_draw(mu, tau_shared, tau_own, size):
    """Forward draw: ``mu + tau_shared * b + tau_own * c`` with standard-normal ``b``, ``c``."""
    shared = pm.Normal.dist(0.0, 1.0, size=mu.shape[:-1])
    own = pm.Normal.dist(0.0, 1.0, size=mu.shape)
    return mu + tau_shared * shared[..., None] + pt.as_tensor(tau_own)[..., None] * own


def patient_structure(cohort: Cohort) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """The dim that carries subject effects, its labels, each subject's patient index, and each
    patient's first sample (the one whose mean centres the patient's vector)."""
    dim, labels, subject_patient = cohort.patient_index()
    first = np.full(len(labels), -1)
    for subject, patient in enumerate(subject_patient):
        if first[patient] < 0:
            first[patient] = subject
    return dim, labels, subject_patient, first


def add_subject_predictors(
    model: pm.Model,
    cohort: Cohort,
    sample_mean: pt.TensorVariable,
    tau_subject: pt.TensorVariable,
    tau_subject_subset: pt.TensorVariable,
    *,
    name: str,
    tau_visit: pt.TensorVariable | None = None,
    link: str = "logit",
    observed: bool = True,
) -> pt.TensorVariable:
    """Each subject's linear predictors (subject, subset), centred on ``sample_mean``.

    Parameters
    ----------
    model, cohort
        The model being built and its cohort.
    sample_mean
        Each sample's expected predictor (subject, subset) before subject effects.
    tau_subject, tau_subject_subset
        SDs of the shared and the subset-specific subject effects.
    name
        Name of the per-patient vector variable (dims: the patient dim and ``subset``); with
        ``tau_visit``, of the per-sample predictors (dims ``subject``, ``subset``).
    tau_visit
        SD of the sample x subset (visit) effect, for cohorts with repeated samples of a
        patient (module docstring); None: samples of a patient share its vector exactly.
    link, observed
        With ``tau_visit``: the predictors' scale (``"logit"`` or ``"probit"``) and whether the
        model has observed counts, for the contrasts' centring weights (``visit_centring``).

    Returns
    -------
    pytensor.TensorVariable
        Linear predictors with dims (subject, subset).
    """
    if tau_visit is not None:
        return add_visit_predictors(
            model,
            cohort,
            sample_mean,
            tau_subject,
            tau_subject_subset,
            tau_visit,
            name=name,
            link=link,
            observed=observed,
        )
    dim, labels, subject_patient, first = patient_structure(cohort)
    if dim not in model.coords:
        model.add_coord(dim, labels)
    patient_vector = pm.CustomDist(
        name,
        sample_mean[first],
        tau_subject,
        tau_subject_subset,
        dist=compound_symmetric_draw,
        logp=compound_symmetric_logp,
        ndim_supp=1,
        ndims_params=[1, 0, 0],
        dims=(dim, "subset"),
    )
    if np.array_equal(first[subject_patient], np.arange(len(subject_patient))):
        return patient_vector  # one sample per patient: nothing to shift
    return patient_vector[subject_patient] + sample_mean - sample_mean[first[subject_patient]]


def add_visit_predictors(
    model: pm.Model,
    cohort: Cohort,
    sample_mean: pt.TensorVariable,
    tau_subject: pt.TensorVariable,
    tau_subject_subset: pt.TensorVariable,
    tau_visit: pt.TensorVariable,
    *,
    name: str,
    link: str,
    observed: bool,
) -> pt.TensorVariable:
    """Per-sample predictors (subject, subset) with a sample x subset effect of SD ``tau_visit``,
    sampled as each patient's mean vector and its samples' contrasts (module docstring).

    Variables: ``{name}_patient`` (patient, subset), the patient means, compound-symmetric
    with own SD ``sqrt(tau_c^2 + tau_v^2 / m)``; ``{name}_contrast`` (visit_contrast, subset),
    the Helmert contrasts partially non-centred with the data's weights
    (``visit_centring``); ``name`` (subject, subset), the predictors, a deterministic.
    """
    dim, labels, subject_patient, _ = patient_structure(cohort)
    if dim not in model.coords:
        model.add_coord(dim, labels)
    contrasts, contrast_labels = helmert_contrasts(subject_patient, labels)
    model.add_coord(CONTRAST_DIM, contrast_labels)
    counts = np.bincount(subject_patient)
    averaging = np.zeros((len(counts), len(subject_patient)))
    averaging[subject_patient, np.arange(len(subject_patient))] = 1.0 / counts[subject_patient]
    patient = pm.CustomDist(
        f"{name}_patient",
        pt.dot(averaging, sample_mean),
        tau_subject,
        pt.sqrt(tau_subject_subset**2 + tau_visit**2 / counts),
        dist=compound_symmetric_draw,
        logp=compound_symmetric_logp,
        ndim_supp=1,
        ndims_params=[1, 0, 0],
        dims=(dim, "subset"),
    )
    mean = pt.dot(contrasts, sample_mean)  # (contrast, subset): the samples' mean differences
    weight = visit_centring(cohort, contrasts, link, observed=observed)
    scaled = pm.Normal(
        f"{name}_contrast", weight * mean, tau_visit**weight, dims=(CONTRAST_DIM, "subset")
    )
    within = mean + tau_visit ** (1.0 - weight) * (scaled - weight * mean)
    predictors = patient[subject_patient] + pt.dot(contrasts.T, within)
    return pm.Deterministic(name, predictors, dims=("subject", "subset"))


def helmert_contrasts(subject_patient: np.ndarray, labels: list[str]):
    """Per patient with m samples, m - 1 orthonormal rows (contrast, subject) orthogonal to the
    patient's mean (Helmert: sample r + 1 against the mean of the first r), and their labels
    (``patient:r``)."""
    rows, names = [], []
    for patient, label in enumerate(labels):
        samples = np.flatnonzero(subject_patient == patient)
        for r in range(1, len(samples)):
            row = np.zeros(len(subject_patient))
            row[samples[:r]], row[samples[r]] = 1.0, -float(r)
            rows.append(row / np.sqrt(r * (r + 1)))
            names.append(f"{label}:{r}")
    return np.reshape(rows, (len(rows), len(subject_patient))), names


def visit_centring(cohort: Cohort, contrasts: np.ndarray, link: str, *, observed: bool):
    r"""Each contrast's centring weight :math:`w = \hat\tau_v^2 / (\hat\tau_v^2 + s^2)` in [0, 1].

    :math:`s^2` is the contrast's binomial variance on the link scale (``empirical_link``) and
    :math:`\hat\tau_v^2` a moment estimate of the visit variance: the variance of the empirical
    contrasts (centred per subset) less their mean binomial variance, floored at 0. Weight 1
    is the centred form (right where the data pin each sample down: visit SD well above the
    noise), weight 0 the non-centred one (right where the visit SD is far below it, the funnel
    of the centred form); in between, the partially non-centred form of Papaspiliopoulos,
    Roberts & Skold (2007, Statist Sci 22:59), which leaves a normal contrast nearly
    uncorrelated with its SD a posteriori. The weights change how the sampler moves, never
    the model: every weight gives the same posterior (``tests/test_visit_effect.py``). A model
    that simulates (no counts) uses the centred form.
    """
    empirical = empirical_link(cohort, link, observed=observed)
    if empirical is None:
        return pt.as_tensor(1.0)
    values, variances = empirical
    estimates = pt.dot(contrasts, values)  # (contrast, subset)
    noise = pt.dot(contrasts**2, variances)
    centred = estimates - estimates.mean(axis=0)
    freedom = max(contrasts.shape[0] - 1, 1) * len(cohort.spec.subsets)
    visit_variance = pt.maximum((centred**2).sum() / freedom - noise.mean(), 0.0)
    return visit_variance / (visit_variance + noise)


def add_visit_sd(cohort: Cohort, prior_sd: float) -> pt.TensorVariable | None:
    """``tau_visit ~ HalfNormal(prior_sd)`` where the cohort has repeated samples of a patient
    (the only data that identify it); None elsewhere."""
    return pm.HalfNormal("tau_visit", prior_sd) if cohort.shares_patients else None
