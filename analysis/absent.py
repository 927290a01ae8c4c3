"""Groups and subsets a cohort lacks: left out of every table a fit writes.

The models keep every group of the schema in their graph (treated patients take the MS_naive
location, and ``pct_pos`` has a row per group), so a cohort without, say, NMOSD patients still
has NMOSD parameters, informed by the prior alone. Such a row in ``estimands.csv`` (49%
[0.2, 99.8]) is easy to paste into a table by mistake; so every table leaves out each row that
rests on a group or subset the cohort lacks, and ``cd49d fit`` says which. ``fit.nc`` keeps the
whole graph.
"""

from __future__ import annotations

import re

import pandas as pd

from models.data import Cohort
from models.schema import GROUPS, NAIVE_GROUP, TREATED_GROUP

#: Per estimand, what its value rests on besides its own group and subset (``reference``: the
#: cohort's reference subset).
RESTS_ON = {
    "pct_pos": (),
    "reduction": (TREATED_GROUP, NAIVE_GROUP),
    "ratio_fold_change": (TREATED_GROUP, NAIVE_GROUP, "reference"),
    "differential_reduction": (TREATED_GROUP, NAIVE_GROUP, "reference"),
    "kappa": (TREATED_GROUP, NAIVE_GROUP),
    "kappa_difference": (TREATED_GROUP, NAIVE_GROUP, "reference"),
    "saturation_mean": (TREATED_GROUP,),
    "saturation": (TREATED_GROUP,),
    "exacerbation_log_or": (TREATED_GROUP,),
}


def absent_groups(cohort: Cohort) -> list[str]:
    present = set(cohort.rows["group"].astype(str))
    return [g for g in GROUPS if g not in present]


def absent_subsets(cohort: Cohort) -> list[str]:
    present = set(cohort.rows["subset"].astype(str))
    return [s for s in cohort.spec.subsets if s not in present]


def absent(cohort: Cohort) -> set[str]:
    return {*absent_groups(cohort), *absent_subsets(cohort)}


def estimand_rows(table: pd.DataFrame, cohort: Cohort) -> pd.DataFrame:
    """The rows of an estimand table whose values rest only on groups and subsets the cohort
    has (``RESTS_ON``); a treated patient's row (``saturation``) names the patient in
    ``group``."""
    missing = absent(cohort)
    if not missing:
        return table

    def kept(row) -> bool:
        needs = {row.subset} if row.subset else set()
        if row.group in GROUPS:
            needs.add(row.group)
        for need in RESTS_ON.get(row.estimand, ()):
            needs.add(cohort.spec.reference_subset if need == "reference" else need)
        return not needs & missing

    return table[[kept(row) for row in table.itertuples()]].reset_index(drop=True)


def parameter_rows(table: pd.DataFrame, cohort: Cohort, column: str = "parameter") -> pd.DataFrame:
    """The rows whose parameter label (``name[label, label]``) names no absent group or subset,
    and, where the table has ``group`` or ``subset`` columns, whose values the cohort has."""
    missing = absent(cohort)
    if not missing or table.empty:
        return table
    labels = table[column].astype(str).map(bracket_labels)
    keep = ~labels.map(lambda found: bool(found & missing))
    for name in ("group", "subset"):
        if name in table.columns:
            keep &= ~table[name].astype(str).isin(missing)
    return table[keep].reset_index(drop=True)


def bracket_labels(parameter: str) -> set[str]:
    found = re.search(r"\[(.*)\]", parameter)
    return {label.strip() for label in found.group(1).split(",")} if found else set()


def absent_note(cohort: Cohort) -> str | None:
    """One line for the terminal, or None when the cohort has every group and subset."""
    groups, subsets = absent_groups(cohort), absent_subsets(cohort)
    if not groups and not subsets:
        return None
    what = [f"group{'s' * (len(groups) > 1)} {', '.join(groups)}"] if groups else []
    what += [f"subset{'s' * (len(subsets) > 1)} {', '.join(subsets)}"] if subsets else []
    return (
        f"the cohort has no {' and no '.join(what)}: every table leaves out the rows that rest "
        "on them (their parameters stay in fit.nc, informed by the prior alone)"
    )
