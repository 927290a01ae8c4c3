"""Subject effects shared by the models: one standard-normal draw per patient, non-centred."""

from __future__ import annotations

import pymc as pm
import pytensor.tensor as pt

from models.data import Cohort


def add_subject_effects(model: pm.Model, cohort: Cohort) -> tuple[pt.TensorVariable, ...]:
    """Standard-normal subject and subject x subset effects, per subject (rows of samples).

    Samples of one patient (``patient_id``) share the patient's effects: in the paired design
    this is the within-patient correlation between the samples before and under natalizumab.
    """
    dim, labels, subject_patient = cohort.patient_index()
    if dim not in model.coords:
        model.add_coord(dim, labels)
    subject_z = pm.Normal("subject_z", 0.0, 1.0, dims=dim)
    subject_subset_z = pm.Normal("subject_subset_z", 0.0, 1.0, dims=(dim, "subset"))
    return subject_z[subject_patient], subject_subset_z[subject_patient]
