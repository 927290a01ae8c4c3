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
visit-to-visit biology, staining and gating), every sample keeps its own predictor vector
:math:`y_j`, and the patient vector is integrated out in closed form: for a patient with
:math:`m` samples, deviations :math:`D_j = y_j - \mu_j`, the mean :math:`\bar D` is
compound-symmetric with own variance :math:`\tau_c^2 + \tau_v^2 / m` and shared
:math:`\tau_b^2`, and the deviations :math:`D_j - \bar D` are independent of it with
:math:`(m - 1) K` degrees of freedom at variance :math:`\tau_v^2` (an orthonormal Helmert
rotation, Jacobian :math:`m^{-K/2}`). The sampled quantities stay the data-pinned per-sample
predictors, so the geometry stays that of the vector model, as long as the visit SD exceeds a
gate's binomial noise: far below it the centred form is a funnel and fits fail the gate
(README, "Generate"). ``tau_visit`` is identified only
by patients with two or more samples: models add it only for such cohorts
(``Cohort.shares_patients``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.data import Cohort


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
    return mu + tau_shared * shared[..., None] + tau_own * own


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

    Returns
    -------
    pytensor.TensorVariable
        Linear predictors with dims (subject, subset).
    """
    if tau_visit is not None:
        return add_visit_predictors(
            cohort, sample_mean, tau_subject, tau_subject_subset, tau_visit, name=name
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
    cohort: Cohort,
    sample_mean: pt.TensorVariable,
    tau_subject: pt.TensorVariable,
    tau_subject_subset: pt.TensorVariable,
    tau_visit: pt.TensorVariable,
    *,
    name: str,
) -> pt.TensorVariable:
    """Per-sample predictors (subject, subset) with the patient vector integrated out and a
    sample x subset effect of SD ``tau_visit`` (module docstring)."""
    _, _, subject_patient, _ = patient_structure(cohort)
    return pm.CustomDist(
        name,
        sample_mean,
        tau_subject,
        tau_subject_subset,
        tau_visit,
        dist=partial(visit_draw, subject_patient),
        logp=partial(visit_logp, subject_patient),
        ndim_supp=2,
        ndims_params=[2, 0, 0, 0],
        dims=("subject", "subset"),
    )


def visit_logp(subject_patient, value, mu, tau_shared, tau_own, tau_visit):
    """Log density of all samples' predictors (sample, subset): per patient, the mean
    deviation (compound-symmetric, own variance ``tau_own^2 + tau_visit^2 / m``) and the
    deviations from it (independent normals of variance ``tau_visit^2``)."""
    counts = np.bincount(subject_patient)
    averaging = np.zeros((len(counts), len(subject_patient)))
    averaging[subject_patient, np.arange(len(subject_patient))] = 1.0 / counts[subject_patient]
    k = value.shape[-1]
    deviation = value - mu
    patient_mean = pt.dot(averaging, deviation)  # (patient, subset)
    within = deviation - patient_mean[subject_patient]
    mean_sd = pt.sqrt(tau_own**2 + tau_visit**2 / counts)
    mean_logp = compound_symmetric_logp(patient_mean, 0.0, tau_shared, mean_sd).sum()
    freedom = int((counts - 1).sum()) * k
    squares = (within**2).sum() / tau_visit**2
    within_logp = -0.5 * (squares + freedom * pt.log(2 * np.pi * tau_visit**2))
    rotation = -0.5 * k * float(np.log(counts).sum())  # |Jacobian| of the patient means
    return mean_logp + within_logp + rotation


def visit_draw(subject_patient, mu, tau_shared, tau_own, tau_visit, size):
    """Forward draw: the patient's compound-symmetric vector plus a visit effect per sample."""
    patients = int(subject_patient.max()) + 1
    shared = pm.Normal.dist(0.0, 1.0, size=(patients,))
    own = pm.Normal.dist(0.0, 1.0, size=(patients, mu.shape[-1]))
    visit = pm.Normal.dist(0.0, 1.0, size=mu.shape)
    patient = tau_shared * shared[:, None] + tau_own * own
    return mu + patient[subject_patient] + tau_visit * visit


def add_visit_sd(cohort: Cohort, prior_sd: float) -> pt.TensorVariable | None:
    """``tau_visit ~ HalfNormal(prior_sd)`` where the cohort has repeated samples of a patient
    (the only data that identify it); None elsewhere."""
    return pm.HalfNormal("tau_visit", prior_sd) if cohort.shares_patients else None
