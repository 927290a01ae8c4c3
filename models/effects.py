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

Samples of one patient (``patient_id``; the paired design) share the patient's vector: the
patient's first sample carries it and every other sample is shifted by the difference of the two
samples' means (before and under natalizumab, say), so the shared effects are the within-patient
correlation.
"""

from __future__ import annotations

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
        Name of the per-patient vector variable (dims: the patient dim and ``subset``).

    Returns
    -------
    pytensor.TensorVariable
        Linear predictors with dims (subject, subset).
    """
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
