"""Summarise simulated trial replicates: power and type-I error, with Monte Carlo error.

Pure functions of the replicate records the simulation engine stores (one row per replicate,
endpoint and analysis); nothing here reads or writes files. Failed analyses (``status`` other
than ``"ok"``) are never dropped silently: every table reports how many there were, and the
``*_all`` power columns count them as non-successes. The n for a target power is read off the
power table by ``simulations.sample_size``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from simulations.analyses import ESTIMATE_OF

GROUP_KEYS = ["design", "scenario", "endpoint", "analysis", "n"]
RECORD_COLUMNS = [*GROUP_KEYS, "replicate", "success", "status", "nominal_level"]
POWER_COLUMNS = [
    *GROUP_KEYS,
    "power",
    "mcse",
    "ci_low",
    "ci_high",
    "n_reps",
    "n_failed",
    "power_all",
    "mcse_all",
    "ci_low_all",
    "ci_high_all",
    "nominal_level",
    "note",
]
TYPE_I_COLUMNS = [
    "design",
    "scenario",
    "endpoint",
    "analysis",
    "n",
    "rejection_rate",
    "mcse",
    "ci_low",
    "ci_high",
    "nominal_level",
    "n_reps",
    "n_failed",
    "within_3_mcse",
    "familywise_mcse",
    "within_familywise",
    "note",
]
#: Half-width, in Monte Carlo standard errors, within which a rejection rate counts as nominal.
TYPE_I_TOLERANCE_MCSE = 3.0
#: Family-wise error rate of the type-I check over all the cells a run checks (Bonferroni).
FAMILYWISE_ALPHA = 0.05


def wilson_interval(successes, trials, *, level: float = 0.95):
    """Wilson score interval for a binomial proportion, vectorised over arrays.

    Parameters
    ----------
    successes : int, float or array_like
        Number of successes.
    trials : int, float or array_like
        Number of trials, broadcastable against ``successes``.
    level : float, default 0.95
        Two-sided confidence level, in (0, 1).

    Returns
    -------
    tuple
        ``(low, high)``: floats for scalar input, else numpy arrays; NaN where ``trials == 0``.
        Equal to ``statsmodels.stats.proportion.proportion_confint(method="wilson")``.

    Raises
    ------
    ValueError
        If ``level`` is not in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    k = np.asarray(successes, dtype=float)
    m = np.asarray(trials, dtype=float)
    crit = stats.norm.isf((1 - level) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = k / m
        denom = 1 + crit**2 / m
        centre = (share + crit**2 / (2 * m)) / denom
        half = crit * np.sqrt(share * (1 - share) / m + crit**2 / (4 * m**2)) / denom
    low = np.where(m > 0, np.clip(centre - half, 0, 1), np.nan)
    high = np.where(m > 0, np.clip(centre + half, 0, 1), np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def binomial_mcse(share, trials):
    """Monte Carlo standard error ``sqrt(p (1 - p) / m)`` of a simulated proportion.

    Parameters
    ----------
    share : float or array_like
        Estimated proportion ``p``.
    trials : float or array_like
        Number of replicates ``m`` it was estimated from.

    Returns
    -------
    float or numpy.ndarray
        The standard error; NaN where ``trials == 0``.
    """
    p = np.asarray(share, dtype=float)
    m = np.asarray(trials, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, np.sqrt(p * (1 - p) / m), np.nan)


def check_records(records: pd.DataFrame) -> None:
    """Check that replicate records can be summarised.

    Parameters
    ----------
    records : pandas.DataFrame
        Replicate records as stored by the simulation engine.

    Raises
    ------
    ValueError
        If a required column is missing, if a replicate appears twice within one
        (design, scenario, endpoint, analysis, n) group (two plans or cells mixed, or a
        replicate stored twice), or if a group holds more than one ``nominal_level``.
    """
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s): {', '.join(missing)}")
    duplicated = records.duplicated([*GROUP_KEYS, "replicate"])
    if duplicated.any():
        first = records.loc[duplicated, [*GROUP_KEYS, "replicate"]].iloc[0].to_dict()
        raise ValueError(f"{int(duplicated.sum())} duplicated replicate row(s), e.g. {first}")
    levels = records.groupby(GROUP_KEYS, dropna=False)["nominal_level"].nunique(dropna=False)
    if (levels > 1).any():
        raise ValueError(f"nominal_level varies within group(s): {levels[levels > 1].index[0]}")


def power_table(records: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Power per (design, scenario, endpoint, analysis, n), with Monte Carlo error and failures.

    Parameters
    ----------
    records : pandas.DataFrame
        Replicate records (columns as stored by the simulation engine); left unchanged.
    level : float, default 0.95
        Confidence level of the Wilson intervals.

    Returns
    -------
    pandas.DataFrame
        Columns ``POWER_COLUMNS``, sorted by design, scenario, endpoint, analysis, n.
        ``power`` is successes over the ``n_reps - n_failed`` analyses that ran (NaN if
        none did); ``power_all`` is successes over all ``n_reps`` replicates, failures
        counting as non-successes. ``mcse*`` are ``sqrt(p (1 - p) / m)`` and ``ci_*`` Wilson
        intervals on the same counts.

    Raises
    ------
    ValueError
        As :func:`check_records`.
    """
    check_records(records)
    is_ok = records["status"].eq("ok")
    counted = pd.DataFrame(
        {
            **{key: records[key] for key in GROUP_KEYS},
            "is_success": records["success"].eq(True) & is_ok,
            "is_failed": ~is_ok,
            "nominal_level": records["nominal_level"].astype(float),
        }
    )
    grouped = counted.groupby(GROUP_KEYS, sort=True, dropna=False)
    table = grouped.agg(
        successes=("is_success", "sum"),
        n_reps=("is_success", "size"),
        n_failed=("is_failed", "sum"),
        nominal_level=("nominal_level", "first"),
    ).reset_index()
    converged = table["n_reps"] - table["n_failed"]
    table = table.assign(
        **power_columns(table["successes"], converged, level=level, suffix=""),
        **power_columns(table["successes"], table["n_reps"], level=level, suffix="_all"),
    )
    table["note"] = bound_notes(table)
    return table[POWER_COLUMNS].astype({"n_reps": int, "n_failed": int})


def bound_notes(table: pd.DataFrame) -> list[str]:
    """Where a power is 0 or 1 its MCSE is undefined (left blank, never 0): say so."""
    notes = []
    for row in table.itertuples():
        at_bound = [
            f"{name} = {value:g} ({int(row.successes)} of {int(trials)}; Wilson 95% "
            f"[{low:.3f}, {high:.3f}])"
            for name, value, trials, low, high in (
                ("power", row.power, row.n_reps - row.n_failed, row.ci_low, row.ci_high),
                ("power_all", row.power_all, row.n_reps, row.ci_low_all, row.ci_high_all),
            )
            if value in (0.0, 1.0)
        ]
        notes.append(f"no MCSE at 0 or 1: {'; '.join(at_bound)}" if at_bound else "")
    return notes


def power_columns(successes, trials, *, level: float, suffix: str) -> dict[str, np.ndarray]:
    """Power, its MCSE and Wilson interval from counts, as columns named with ``suffix``.

    Parameters
    ----------
    successes, trials : array_like
        Success and trial counts per row.
    level : float
        Confidence level of the Wilson interval.
    suffix : str
        Appended to ``power``, ``mcse``, ``ci_low`` and ``ci_high``.

    Returns
    -------
    dict of str to numpy.ndarray
        The four columns; NaN where ``trials == 0``, and the MCSE NaN (undefined, never
        shown as 0) where the power is 0 or 1.
    """
    k = np.asarray(successes, dtype=float)
    m = np.asarray(trials, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(m > 0, k / m, np.nan)
    low, high = wilson_interval(k, m, level=level)
    at_bound = (share == 0) | (share == 1)  # no Monte Carlo SE there: the Wilson interval
    return {
        f"power{suffix}": share,
        f"mcse{suffix}": np.where(at_bound, np.nan, binomial_mcse(share, m)),
        f"ci_low{suffix}": low,
        f"ci_high{suffix}": high,
    }


def type_i_table(power: pd.DataFrame) -> pd.DataFrame:
    """The null-scenario rows of a power table: rejection rate against the nominal level.

    The rejection rate is among analyses that ran (``power``), since counting failures as
    non-rejections would flatter a test's calibration; ``n_failed`` is shown beside it.

    Parameters
    ----------
    power : pandas.DataFrame
        Output of :func:`power_table` (or its CSV); left unchanged.

    Returns
    -------
    pandas.DataFrame
        Columns ``TYPE_I_COLUMNS``. ``within_3_mcse`` is a nullable boolean:
        ``|rejection_rate - nominal_level| <= 3 * MCSE under the null``, and ``<NA>`` (not
        applicable) where
        ``nominal_level`` or ``rejection_rate`` is NaN (e.g. Bayesian rules with no nominal
        type-I error, or no analysis converged). The MCSE is that of a test of exactly
        nominal size, ``sqrt(nominal (1 - nominal) / m)``. ``within_familywise`` judges the
        same gap at ``familywise_mcse`` MCSEs, the two-sided normal quantile that keeps the
        chance of flagging any of the K checked rows of an exactly calibrated run at
        ``FAMILYWISE_ALPHA`` (Bonferroni: ``z_{1 - 0.05 / (2K)}``; K is the number of rows
        with a verdict, the same in every row): at 3 MCSE alone, one of many calibrated
        cells is flagged by chance.
    """
    is_null = power["scenario"].astype(str).str.startswith("null")
    null = power.loc[is_null].rename(columns={"power": "rejection_rate"})
    gap = (null["rejection_rate"] - null["nominal_level"]).abs()
    # The MCSE under the null hypothesis (rate = nominal), not the estimated one, which is 0
    # when no replicate rejected.
    null_mcse = pd.Series(
        binomial_mcse(null["nominal_level"], null["n_reps"] - null["n_failed"]), index=null.index
    )
    undecided = gap.isna() | null_mcse.isna()
    within = (gap <= TYPE_I_TOLERANCE_MCSE * null_mcse).astype("boolean")
    within[undecided] = pd.NA
    checked = int((~undecided).sum())
    familywise = float(stats.norm.isf(FAMILYWISE_ALPHA / (2 * checked))) if checked else np.nan
    within_familywise = (gap <= familywise * null_mcse).astype("boolean")
    within_familywise[undecided] = pd.NA
    null = null.assign(
        within_3_mcse=within, familywise_mcse=familywise, within_familywise=within_familywise
    )
    return null[TYPE_I_COLUMNS].reset_index(drop=True)


PERFORMANCE_COLUMNS = [
    *GROUP_KEYS,
    "n_reps",
    "n_estimates",
    "estimate_of",
    "true_value",
    "true_value_of",
    "mean_estimate",
    "bias",
    "bias_mcse",
    "empirical_se",
    "empirical_se_mcse",
    "model_se",
    "model_se_mcse",
    "coverage",
    "coverage_mcse",
    "coverage_ci_low",
    "coverage_ci_high",
    "note",
]
#: Every Bayesian rule of a replicate reports the same posterior: one ``bayes`` row stands for all.
BAYES_ANALYSIS = "bayes"


def performance_table(records: pd.DataFrame, truths: pd.DataFrame) -> pd.DataFrame:
    """Bias, empirical SE, model SE and 95% interval coverage per cell and analysis, with MCSEs.

    Performance measures and their Monte Carlo SEs as in Morris, White & Crowther (2019,
    Table 6): bias ``mean(est) - truth`` (MCSE ``sd(est)/sqrt(k)``), empirical SE ``sd(est)``
    (MCSE ``EmpSE/sqrt(2(k - 1))``), model SE ``sqrt(mean(se^2))`` (MCSE
    ``sqrt(var(se^2) / (4 k ModSE^2))``) and coverage of ``truth`` by ``[ci_low, ci_high]``
    (binomial MCSE; at 0 or 1 none is given and ``note`` holds the Wilson interval). Only
    analyses with ``status == "ok"`` and a finite estimate count (``n_estimates`` of
    ``n_reps``); the Bayesian rules of one replicate share one posterior and are one
    ``bayes`` row.

    Parameters
    ----------
    records : pandas.DataFrame
        Replicate records with ``estimate, std_error, ci_low, ci_high``.
    truths : pandas.DataFrame
        ``scenario, endpoint, family, true_value, true_value_of`` (``family``: ``bayes``,
        ``mfi`` or ``frequentist``; ``simulations.observable.estimand_truths``). Cells without
        a truth get NaN bias and coverage.

    Returns
    -------
    pandas.DataFrame
        Columns ``PERFORMANCE_COLUMNS``.
    """
    check_records(records)
    frame = one_bayes_row(records)
    frame = frame.assign(family=analysis_family(frame["analysis"]))
    keys = ["scenario", "endpoint", "family"]
    frame = frame.merge(truths[[*keys, "true_value", "true_value_of"]], on=keys, how="left")
    rows = []
    for group_keys, group in frame.groupby(GROUP_KEYS, sort=True):
        row = dict(zip(GROUP_KEYS, group_keys, strict=True))
        row["estimate_of"] = ESTIMATE_OF.get(row["analysis"], "")
        rows.append({**row, **cell_performance(group)})
    return pd.DataFrame(rows, columns=PERFORMANCE_COLUMNS)


def analysis_family(analysis: pd.Series) -> np.ndarray:
    """The truth each analysis estimates: ``bayes``, ``mfi`` (the log-MFI tests) or
    ``frequentist`` (``simulations.observable.estimand_truths``)."""
    family = np.where(analysis.str.endswith("_mfi"), "mfi", "frequentist")
    return np.where(analysis.eq(BAYES_ANALYSIS), "bayes", family)


def one_bayes_row(records: pd.DataFrame) -> pd.DataFrame:
    """Records with every replicate's Bayesian rows reduced to its first, named ``bayes``."""
    is_bayes = records["analysis"].str.startswith("bayes_")
    bayes = records[is_bayes].drop_duplicates([*GROUP_KEYS[:2], "n", "endpoint", "replicate"])
    return pd.concat([records[~is_bayes], bayes.assign(analysis=BAYES_ANALYSIS)], ignore_index=True)


def cell_performance(group: pd.DataFrame) -> dict:
    """The performance measures of one (cell, endpoint, analysis) group of records."""
    usable = group[group["status"].eq("ok") & np.isfinite(group["estimate"])]
    k = len(usable)
    truth = float(group["true_value"].iloc[0])
    estimate = usable["estimate"].to_numpy(dtype=float)
    notes = []
    out = {
        "n_reps": group["replicate"].nunique(),
        "n_estimates": k,
        "true_value": truth,
        "true_value_of": group["true_value_of"].iloc[0],
        "mean_estimate": estimate.mean() if k else np.nan,
    }
    enough = k >= 2
    spread = estimate.std(ddof=1) if enough else np.nan
    out["bias"] = out["mean_estimate"] - truth
    out["bias_mcse"] = spread / np.sqrt(k) if enough else np.nan
    out["empirical_se"] = spread
    out["empirical_se_mcse"] = spread / np.sqrt(2 * (k - 1)) if enough else np.nan
    variance = usable["std_error"].to_numpy(dtype=float) ** 2
    if enough and np.isfinite(variance).all():
        model_se = np.sqrt(variance.mean())
        out["model_se"] = model_se
        out["model_se_mcse"] = np.sqrt(variance.var(ddof=1) / (4 * k * model_se**2))
        covered = (usable["ci_low"] <= truth) & (truth <= usable["ci_high"])
        out.update(coverage_columns(int(covered.sum()), k, notes))
    else:
        out.update(dict.fromkeys(["model_se", "model_se_mcse"], np.nan))
        out.update(dict.fromkeys(["coverage", "coverage_mcse"], np.nan))
        out.update(dict.fromkeys(["coverage_ci_low", "coverage_ci_high"], np.nan))
        if k:
            notes.append("no model SE or interval (rank test)")
    if k < len(group):
        notes.append(f"{len(group) - k} of {len(group)} analyses failed: left out")
    out["note"] = "; ".join(notes)
    return out


def coverage_columns(covered: int, total: int, notes: list[str]) -> dict:
    """Coverage, its MCSE (none at 0 or 1, with the Wilson interval noted) and Wilson bounds."""
    share = covered / total
    low, high = wilson_interval(covered, total)
    mcse = float(binomial_mcse(share, total))
    if covered in (0, total):
        mcse = np.nan
        notes.append(f"coverage {covered}/{total}: Wilson 95% [{low:.3f}, {high:.3f}]")
    return {
        "coverage": share,
        "coverage_mcse": mcse,
        "coverage_ci_low": low,
        "coverage_ci_high": high,
    }
