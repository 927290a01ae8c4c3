"""The cohort file schema: column names, allowed labels and tolerances.

Long format, one row per subject x subset (documented with an example in ``data/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS: tuple[str, ...] = ("HC", "MS_naive", "MS_NTZ", "NMOSD")
TREATED_GROUP = "MS_NTZ"
NAIVE_GROUP = "MS_naive"
DEFAULT_SUBSETS: tuple[str, ...] = ("Th1", "Th17", "Treg")
DEFAULT_REFERENCE_SUBSET = "Treg"

ID_COLUMNS: tuple[str, ...] = ("subject_id", "group", "subset")
COUNT_COLUMNS: tuple[str, ...] = ("n_cells", "n_cd49d_pos")
PCT_COLUMN = "pct_cd49d_pos"
EXACERBATION_COLUMN = "exacerbation"
#: A file needs, per row, both counts or the percentage, so it needs the count columns, the
#: percentage column or all three; each of them is optional as a column.
MEASUREMENT_COLUMNS: tuple[str, ...] = (*COUNT_COLUMNS, PCT_COLUMN)
#: ``exacerbation`` is optional: a cohort without follow-up has none (the exacerbation models
#: then refuse to fit, naming the patients without it).
REQUIRED_COLUMNS: tuple[str, ...] = ID_COLUMNS
#: The columns of a cohort file this package writes (the bundled cohort, simulate-cohort).
FILE_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, *MEASUREMENT_COLUMNS, EXACERBATION_COLUMN)
#: Optional per-row fluorescence: the subset's median CD49d fluorescence and the fluorescence
#: value of its CD49d+ gate boundary, in the same (linear, compensated) units; both or neither.
MFI_COLUMN, MFI_GATE_COLUMN = "mfi_cd49d", "mfi_gate"
MFI_COLUMNS: tuple[str, ...] = (MFI_COLUMN, MFI_GATE_COLUMN)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    *MFI_COLUMNS,
    "patient_id",
    "age",
    "sex",
    "months_on_ntz",
    "days_since_infusion",
    "saturation_measured",
)
NUMERIC_COLUMNS: tuple[str, ...] = (
    *COUNT_COLUMNS,
    PCT_COLUMN,
    EXACERBATION_COLUMN,
    *MFI_COLUMNS,
    "age",
    "months_on_ntz",
    "days_since_infusion",
    "saturation_measured",
)
KNOWN_COLUMNS: tuple[str, ...] = (*FILE_COLUMNS, *OPTIONAL_COLUMNS)
SUBJECT_LEVEL_COLUMNS: tuple[str, ...] = (
    "group",
    "patient_id",
    EXACERBATION_COLUMN,
    "age",
    "sex",
    "months_on_ntz",
    "days_since_infusion",
    "saturation_measured",
)
SEXES: tuple[str, ...] = ("F", "M")

#: Cell texts read as missing. Anything else in a numeric column must parse as a number.
MISSING_TEXTS: frozenset[str] = frozenset({"", "na", "nan", "n/a", "null", "none"})

#: Largest allowed |pct_cd49d_pos - 100 * n_cd49d_pos / n_cells|, in percentage points.
#: 0.5 admits percentages rounded to whole numbers.
PCT_AGREEMENT_TOLERANCE = 0.5


@dataclass(frozen=True)
class CohortSpec:
    """Which T-cell subsets a cohort file may hold, and which is the ratio's reference.

    Parameters
    ----------
    subsets
        Allowed subset labels, in display order.
    reference_subset
        The regulatory subset that forms the CD49d ratio's denominator; must be in ``subsets``.

    Raises
    ------
    ValueError
        If the reference subset is not among the subsets or a label repeats.
    """

    subsets: tuple[str, ...] = DEFAULT_SUBSETS
    reference_subset: str = DEFAULT_REFERENCE_SUBSET

    def __post_init__(self) -> None:
        if len(set(self.subsets)) != len(self.subsets):
            raise ValueError(f"subset labels repeat: {', '.join(self.subsets)}")
        if self.reference_subset not in self.subsets:
            raise ValueError(
                f"reference subset {self.reference_subset!r} is not among the subsets "
                f"({', '.join(self.subsets)})"
            )

    @property
    def effector_subsets(self) -> tuple[str, ...]:
        """Subsets whose CD49d ratio to the reference subset is reported."""
        return tuple(s for s in self.subsets if s != self.reference_subset)
