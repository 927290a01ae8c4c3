"""Rows that rest on a group or subset the cohort lacks are left out of the fit's tables."""

import pandas as pd

from analysis.absent import absent_note, estimand_rows, parameter_rows
from models.data import Cohort, load_cohort
from tests.conftest import BUNDLED_COHORT


def without(**dropped) -> Cohort:
    cohort = load_cohort(BUNDLED_COHORT)
    rows = cohort.rows.drop(columns=["has_counts", "positive_rate"])
    for column, value in dropped.items():
        rows = rows[rows[column].astype(str) != value]
    return Cohort.from_frame(rows.astype({"group": str, "subset": str}), cohort.spec, "test")


def estimands() -> pd.DataFrame:
    rows = [
        ("pct_pos", "HC", "Th1"),
        ("pct_pos", "HC", "Th17"),
        ("pct_pos", "MS_NTZ", "Treg"),
        ("reduction", "", "Th1"),
        ("reduction", "", "Th17"),
        ("ratio_fold_change", "", "Th1"),
        ("kappa", "", ""),
        ("saturation", "NTZ01", ""),
        ("exacerbation_log_or", "", ""),
    ]
    return pd.DataFrame(rows, columns=["estimand", "group", "subset"])


def kept(table: pd.DataFrame) -> list[tuple]:
    return [tuple(row) for row in table[["estimand", "group", "subset"]].itertuples(index=False)]


def test_a_missing_subset_drops_its_rows_and_nothing_else():
    cohort = without(subset="Th17")
    assert absent_note(cohort) == (
        "the cohort has no subset Th17: every table leaves out the rows that rest on them "
        "(their parameters stay in fit.nc, informed by the prior alone)"
    )
    table = estimands()
    assert kept(estimand_rows(table, cohort)) == [row for row in kept(table) if row[2] != "Th17"]


def test_without_treated_patients_every_drug_estimand_goes():
    cohort = without(group="MS_NTZ")
    assert kept(estimand_rows(estimands(), cohort)) == [
        ("pct_pos", "HC", "Th1"),
        ("pct_pos", "HC", "Th17"),
    ]


def test_parameter_labels_naming_an_absent_group_go():
    cohort = without(group="NMOSD")
    table = pd.DataFrame(
        {
            "parameter": [
                "location_probit[NMOSD, Th1]",
                "location_probit[HC, Th1]",
                "pct_pos[NMOSD, Treg]",
                "tau_subject",
            ]
        }
    )
    assert parameter_rows(table, cohort)["parameter"].tolist() == [
        "location_probit[HC, Th1]",
        "tau_subject",
    ]
    assert absent_note(load_cohort(BUNDLED_COHORT)) is None
