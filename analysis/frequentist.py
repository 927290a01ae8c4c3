"""The study's own frequentist analysis: descriptive tables and rank tests (the baseline).

Kimura et al. 2016 report directions only; nonparametric tests were most likely used (see
``../shared/reference/study.md``). Per subject the CD49d ratio of an effector subset is its
positive rate over the reference (Treg) subset's positive rate.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
from scipy import stats

from models.data import Cohort
from models.schema import GROUPS, NAIVE_GROUP, TREATED_GROUP

PCT = "pct_cd49d_pos"
RATIO = "cd49d_ratio"
#: Largest number of arrangements for which a tied Mann-Whitney test is done by exact permutation.
MAX_EXACT_PERMUTATIONS = 100_000
COLUMNS = [
    "analysis",
    "quantity",
    "subset",
    "group",
    "comparison",
    "n",
    "n_other",
    "median",
    "q25",
    "q75",
    "statistic",
    "p_value",
    "min_attainable_p",
    "method",
    "note",
]


def subject_measures(cohort: Cohort) -> pd.DataFrame:
    """Long table of per-subject measures: % CD49d+ per subset and the CD49d ratios.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject_id, group, exacerbation, quantity, subset, value``; ``quantity`` is
        ``pct_cd49d_pos`` (percent) or ``cd49d_ratio`` (subset named ``Th1/Treg`` etc.). A
        ratio whose denominator is 0 is +inf (it still ranks); a missing subset gives no row.
    """
    rates = cohort.rates_wide()
    reference = cohort.spec.reference_subset
    parts = [(PCT, subset, 100 * rates[subset]) for subset in cohort.spec.subsets]
    with np.errstate(divide="ignore", invalid="ignore"):
        parts += [
            (RATIO, f"{subset}/{reference}", rates[subset] / rates[reference])
            for subset in cohort.spec.effector_subsets
        ]
    subjects = cohort.subjects.set_index("subject_id")
    frames = [
        pd.DataFrame({"quantity": quantity, "subset": label, "value": values})
        .rename_axis("subject_id")
        .reset_index()
        for quantity, label, values in parts
    ]
    long = pd.concat(frames, ignore_index=True).dropna(subset=["value"])
    long["group"] = long["subject_id"].map(subjects["group"]).astype(str)
    long["exacerbation"] = long["subject_id"].map(subjects["exacerbation"])
    return long[["subject_id", "group", "exacerbation", "quantity", "subset", "value"]]


def descriptive_rows(measures: pd.DataFrame) -> pd.DataFrame:
    """n, median and IQR per quantity, subset and group."""
    grouped = measures.groupby(["quantity", "subset", "group"], sort=False)["value"]
    table = grouped.agg(
        n="size", median="median", q25=lambda v: v.quantile(0.25), q75=lambda v: v.quantile(0.75)
    )
    table = table.reset_index()
    table["analysis"] = "descriptive"
    table["group"] = pd.Categorical(table["group"], categories=GROUPS)
    table["quantity"] = pd.Categorical(table["quantity"], categories=[PCT, RATIO])
    table = table.sort_values(["quantity", "group"], kind="stable")
    return table.astype({"quantity": str, "group": str})


def mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """Two-sided Mann-Whitney U of x against y: exact without ties, else permutation/asymptotic.

    Returns
    -------
    tuple
        U statistic of ``x``, p-value and the method used.
    """
    pooled = np.concatenate([x, y])
    has_ties = len(np.unique(pooled)) < len(pooled)
    if not has_ties:
        method, label = "exact", "exact"
    elif comb(len(pooled), len(x)) <= MAX_EXACT_PERMUTATIONS:
        method = stats.PermutationMethod(n_resamples=np.inf)
        label = "exact permutation (ties)"
    else:
        method, label = "asymptotic", "asymptotic, tie-corrected"
    result = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
    return float(result.statistic), float(result.pvalue), label


def min_attainable_p(n_x: int, n_y: int) -> float:
    """Smallest two-sided exact Mann-Whitney p-value for these sample sizes (no ties)."""
    return min(1.0, 2 / comb(n_x + n_y, n_x))


def kruskal_rows(measures: pd.DataFrame) -> list[dict]:
    rows = []
    for (quantity, subset), data in measures.groupby(["quantity", "subset"], sort=False):
        samples = [data.loc[data["group"] == g, "value"].to_numpy() for g in GROUPS]
        present = [g for g, sample in zip(GROUPS, samples, strict=True) if len(sample)]
        samples = [sample for sample in samples if len(sample)]
        if len(samples) < 2:
            continue
        result = stats.kruskal(*samples)
        rows.append(
            {
                "analysis": "kruskal_wallis",
                "quantity": quantity,
                "subset": subset,
                "comparison": " vs ".join(present),
                "n": int(sum(map(len, samples))),
                "statistic": float(result.statistic),
                "p_value": float(result.pvalue),
                "method": "asymptotic chi-square, tie-corrected",
            }
        )
    return rows


def two_group_rows(
    measures: pd.DataFrame,
    *,
    analysis: str,
    comparison: str,
    first: pd.Series,
    second: pd.Series,
    note: str | None = None,
) -> list[dict]:
    """A Mann-Whitney row per quantity and subset, comparing the rows where ``first`` holds
    with those where ``second`` holds (boolean masks over ``measures``)."""
    rows = []
    for (quantity, subset), data in measures.groupby(["quantity", "subset"], sort=False):
        x = data.loc[first[data.index], "value"].to_numpy()
        y = data.loc[second[data.index], "value"].to_numpy()
        if not len(x) or not len(y):
            continue
        u, p, method = mann_whitney(x, y)
        rows.append(
            {
                "analysis": analysis,
                "quantity": quantity,
                "subset": subset,
                "group": TREATED_GROUP,
                "comparison": comparison,
                "n": len(x),
                "n_other": len(y),
                "statistic": u,
                "p_value": p,
                "min_attainable_p": min_attainable_p(len(x), len(y)),
                "method": method,
                "note": note,
            }
        )
    return rows


def treated_vs_naive_rows(measures: pd.DataFrame) -> list[dict]:
    return two_group_rows(
        measures,
        analysis="mann_whitney",
        comparison=f"{TREATED_GROUP} vs {NAIVE_GROUP}",
        first=measures["group"] == TREATED_GROUP,
        second=measures["group"] == NAIVE_GROUP,
    )


def exacerbation_rows(measures: pd.DataFrame) -> list[dict]:
    treated = measures["group"] == TREATED_GROUP
    return two_group_rows(
        measures,
        analysis="exacerbation",
        comparison=f"exacerbation vs none, within {TREATED_GROUP}",
        first=treated & (measures["exacerbation"] == 1),
        second=treated & (measures["exacerbation"] == 0),
        note="descriptive: with these group sizes p cannot fall below min_attainable_p",
    )


def frequentist_table(cohort: Cohort) -> pd.DataFrame:
    """The full ``frequentist.csv`` table (descriptives and tests), columns as in ``COLUMNS``."""
    measures = subject_measures(cohort)
    tests = pd.DataFrame(
        kruskal_rows(measures) + treated_vs_naive_rows(measures) + exacerbation_rows(measures)
    )
    table = pd.concat([descriptive_rows(measures), tests], ignore_index=True)
    return table.reindex(columns=COLUMNS)


def relative_loss(measures: pd.DataFrame) -> pd.Series:
    """Per subset: 1 - median % CD49d+ in MS_NTZ / median in MS_naive."""
    pct = measures[measures["quantity"] == PCT]
    medians = pct.groupby(["subset", "group"])["value"].median().unstack("group")
    return 1 - medians[TREATED_GROUP] / medians[NAIVE_GROUP]


def study_findings(cohort: Cohort, *, alpha: float = 0.05) -> dict[str, bool]:
    """Whether a cohort shows the study's findings R1-R4 (``study.md``), by its likely tests.

    R1/R2: each CD49d ratio higher in MS_NTZ than MS_naive (two-sided Mann-Whitney p < alpha,
    higher median). R3: the relative loss of CD49d+ cells is larger in the reference subset
    than in every effector subset. R4: every exacerbator's ratios exceed every other treated
    patient's (U at its maximum).
    """
    measures = subject_measures(cohort)
    tests = pd.DataFrame(treated_vs_naive_rows(measures)).set_index(["quantity", "subset"])
    descriptive = descriptive_rows(measures).set_index(["quantity", "subset", "group"])
    findings = {}
    for label, subset in zip(("R1", "R2"), ratio_labels(cohort), strict=False):
        higher = (
            descriptive.loc[(RATIO, subset, TREATED_GROUP), "median"]
            > descriptive.loc[(RATIO, subset, NAIVE_GROUP), "median"]
        )
        findings[label] = bool(higher and tests.loc[(RATIO, subset), "p_value"] < alpha)
    loss = relative_loss(measures)
    reference = cohort.spec.reference_subset
    findings["R3"] = bool((loss[reference] > loss.drop(reference)).all())
    events = pd.DataFrame(exacerbation_rows(measures))
    ratio_events = events[events["quantity"] == RATIO]
    findings["R4"] = bool(
        len(ratio_events)
        and (ratio_events["statistic"] == ratio_events["n"] * ratio_events["n_other"]).all()
    )
    return findings


def ratio_labels(cohort: Cohort) -> list[str]:
    return [f"{s}/{cohort.spec.reference_subset}" for s in cohort.spec.effector_subsets]
