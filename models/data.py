"""The validated cohort: the one loader every command and model goes through."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models import schema as s
from models.validation import CohortFileError, Problem, validate_file

__all__ = ["Cohort", "CohortFileError", "Problem", "load_cohort", "log_mfi_ratio"]


@dataclass(frozen=True)
class Cohort:
    """Validated cohort rows (one per subject x subset) and the spec they were checked against.

    ``rows`` holds the file's columns plus ``positive_rate`` (a fraction: counts when both are
    given, else ``pct_cd49d_pos / 100``) and ``has_counts``.
    """

    rows: pd.DataFrame
    spec: s.CohortSpec
    source: str
    ignored_columns: tuple[str, ...] = ()  # the file's unknown columns, left out of ``rows``

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        spec: s.CohortSpec,
        source: str,
        ignored_columns: tuple[str, ...] = (),
    ) -> Cohort:
        """Wrap typed rows (as returned by validation) and derive the positive rate."""
        rows = frame.copy()
        rows["has_counts"] = rows["n_cells"].notna() & rows["n_cd49d_pos"].notna()
        from_counts = rows["n_cd49d_pos"] / rows["n_cells"]
        rows["positive_rate"] = from_counts.where(rows["has_counts"], rows[s.PCT_COLUMN] / 100)
        rows["group"] = pd.Categorical(rows["group"], categories=s.GROUPS)
        rows["subset"] = pd.Categorical(rows["subset"], categories=spec.subsets)
        return cls(rows=rows, spec=spec, source=source, ignored_columns=ignored_columns)

    @property
    def subjects(self) -> pd.DataFrame:
        """One row per subject: id, group and the subject-level columns present."""
        columns = [c for c in s.SUBJECT_LEVEL_COLUMNS if c in self.rows.columns]
        table = self.rows.groupby("subject_id", sort=False, observed=True)[columns].first()
        return table.reset_index()

    def patient_index(self) -> tuple[str, list[str], np.ndarray]:
        """The dim that carries subject effects, its labels, and each subject's index into it.

        Samples that share a ``patient_id`` (e.g. before and under natalizumab, the paired
        design) share one patient's effects; a subject without one is its own patient. A cohort
        with no ``patient_id`` column keeps the dim ``subject``.
        """
        subjects = self.subjects
        if "patient_id" not in subjects.columns:
            return "subject", subjects["subject_id"].astype(str).tolist(), np.arange(len(subjects))
        patients = subjects["patient_id"].fillna(subjects["subject_id"]).astype(str)
        labels = list(dict.fromkeys(patients))
        return "patient", labels, patients.map({p: i for i, p in enumerate(labels)}).to_numpy()

    @property
    def shares_patients(self) -> bool:
        """Whether some samples share a patient (``patient_id``; the paired design)."""
        _, labels, _ = self.patient_index()
        return len(labels) < len(self.subjects)

    def rates_wide(self) -> pd.DataFrame:
        """Positive rates (fractions) per subject, one column per subset; missing as NaN."""
        wide = self.rows.pivot(index="subject_id", columns="subset", values="positive_rate")
        wide = wide.reindex(columns=list(self.spec.subsets))
        wide.columns = wide.columns.astype(str)
        return wide.reindex(self.subjects["subject_id"])

    def coords(self) -> dict[str, list[str]]:
        """PyMC coordinates: subjects in file order, subsets and groups in schema order."""
        return {
            "subject": self.subjects["subject_id"].astype(str).tolist(),
            "subset": list(self.spec.subsets),
            "group": list(s.GROUPS),
        }

    def index_arrays(self) -> dict[str, np.ndarray]:
        """Integer codes linking each row to its subject and subset, and each subject to a group."""
        subject_order = {sid: i for i, sid in enumerate(self.subjects["subject_id"])}
        return {
            "row_subject": self.rows["subject_id"].map(subject_order).to_numpy(dtype=int),
            "row_subset": self.rows["subset"].cat.codes.to_numpy(dtype=int),
            "subject_group": pd.Categorical(
                self.subjects["group"], categories=s.GROUPS
            ).codes.astype(int),
        }


def log_mfi_ratio(rows: pd.DataFrame) -> np.ndarray:
    """``log(mfi_cd49d / mfi_gate)`` of each row: the subset's median log CD49d relative to its
    gate, as the saturation models read it (NaN where a row has no MFI reading)."""
    return np.log(rows[s.MFI_COLUMN].to_numpy(float) / rows[s.MFI_GATE_COLUMN].to_numpy(float))


def load_cohort(path: Path | str, spec: s.CohortSpec | None = None) -> Cohort:
    """Load and validate a cohort CSV.

    Parameters
    ----------
    path
        The CSV file in the schema of ``data/README.md``.
    spec
        Allowed subsets and the reference subset; defaults to Th1, Th17 and Treg (reference).

    Returns
    -------
    Cohort
        The validated cohort; its ``ignored_columns`` are the file's unknown columns.

    Raises
    ------
    CohortFileError
        Listing every problem, each naming file, line and column.
    """
    spec = spec or s.CohortSpec()
    checked = validate_file(path, spec)
    return Cohort.from_frame(checked.rows, spec, str(path), checked.ignored_columns)
