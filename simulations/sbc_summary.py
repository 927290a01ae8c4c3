"""Summarise simulation-based calibration: rank ECDFs, simultaneous bands, contraction.

For each quantity, the ranks ``r`` of the true values among ``L`` thinned posterior draws are
turned into randomised probability integral transforms ``u = (r + V) / (L + 1)``,
``V ~ Uniform(0, 1)``: exactly uniform when the model is calibrated. Their ECDF is compared
with the uniform by the statistic of Sailynoja, Burkner & Vehtari (2022): ``gamma = 1 - 2 min``
over the evaluation points ``z = 1/N, ..., (N-1)/N`` of the binomial tail probabilities of the
ECDF count (ArviZ's ``arviz_stats.ecdf_utils``, whose simulation gives the simultaneous bands
of the plots). Its null distribution comes from ``NULL_SIMULATIONS`` uniform samples of the
same size, which gives

- ``p_value``: the share of null samples whose gamma is at least the observed one;
- ``within_95_band``: the ECDF stays inside the simultaneous 95% band (``p_value > 0.05``);
- ``passes``: ``p_value`` above ``0.05 / K`` for the K quantities of the model (Bonferroni),
  so that a calibrated model passes with probability at least 0.95 as a whole.

``true_median_ranked``, ``true_median_failed`` and ``failure_p_value`` (Mann-Whitney, true
values of the failed against the ranked fits) show whether fits fail where the truth lies in
one region: the ranked fits are then a sample of the prior restricted to where the fit
converges, and a selection that SBC alone cannot see.

``contraction`` is ``1 - (posterior IQR / prior IQR)^2``, the median over the replicates (the
prior IQR is that of the true values, which are prior draws): near 1 the design identifies the
quantity, near 0 the prior alone informs it (labels as ``models.sensitivity``). For a normal
quantity this is ``1 - posterior variance / prior variance``; quartiles and the median keep it
stable for the heavy-tailed derived estimands (a reduction ``1 - p1 / p0`` under a wide prior
on ``p0``), whose variance ratio a few extreme replicates decide.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy.special import bdtr
from scipy.stats import mannwhitneyu

from models.sensitivity import informed_by

NULL_SIMULATIONS = 2000
FAMILYWISE_LEVEL = 0.05
BAND_PROB = 0.95
SUMMARY_COLUMNS = [
    "quantity",
    "kind",
    "replicates",
    "ranked",
    "failed_fits",
    "max_rank",
    "ecdf_max_deviation",
    "gamma",
    "p_value",
    "within_95_band",
    "passes",
    "contraction",
    "informed_by",
    "true_median_ranked",
    "true_median_failed",
    "failure_p_value",
]


def randomised_pit(ranks: np.ndarray, max_rank: int, seed: int) -> np.ndarray:
    """Ranks in ``0..max_rank`` as continuous, exactly uniform (under calibration) values."""
    jitter = np.random.default_rng(seed).uniform(size=len(ranks))
    return (np.asarray(ranks, dtype=float) + jitter) / (max_rank + 1)


def gamma_statistic(values: np.ndarray) -> float:
    """``1 - 2 min(lower, upper tail probability)`` of the ECDF of ``values`` in [0, 1]."""
    n = len(values)
    points = np.arange(1, n) / n
    counts = np.searchsorted(np.sort(values), points, side="right")
    lower = np.min(bdtr(counts, n, points))
    upper = np.min(1 - bdtr(counts - 1, n, points))
    return float(1 - 2 * min(lower, upper))


@functools.lru_cache(maxsize=16)
def null_gammas(n: int) -> np.ndarray:
    """The gamma statistic of ``NULL_SIMULATIONS`` uniform samples of size ``n`` (seeded)."""
    rng = np.random.default_rng(n)
    return np.array([gamma_statistic(rng.uniform(size=n)) for _ in range(NULL_SIMULATIONS)])


def uniformity(values: np.ndarray) -> tuple[float, float]:
    """The gamma statistic and its p-value against uniformity."""
    gamma = gamma_statistic(values)
    null = null_gammas(len(values))
    return gamma, float((np.sum(null >= gamma) + 1) / (len(null) + 1))


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per quantity: uniformity of its ranks, failed fits and contraction."""
    replicates = rows["replicate"].nunique()
    ranked = rows[rows["status"] == "ok"]
    failed = rows.loc[rows["status"] != "ok", "replicate"].nunique()
    quantities = ranked.groupby(["quantity", "kind"], sort=False)
    failed_truths = rows[rows["status"] != "ok"].groupby("quantity")["true_value"]
    threshold = FAMILYWISE_LEVEL / max(len(quantities), 1)
    table = []
    for (quantity, kind), group in quantities:
        max_rank = int(group["max_rank"].iloc[0])
        values = randomised_pit(group["rank"].to_numpy(), max_rank, seed=len(group))
        gamma, p_value = uniformity(values)
        points = np.arange(1, len(values)) / len(values)
        ecdf = np.searchsorted(np.sort(values), points, side="right") / len(values)
        contraction = median_contraction(group["posterior_iqr"], group["true_value"])
        table.append(
            {
                "quantity": quantity,
                "kind": kind,
                "replicates": replicates,
                "ranked": len(group),
                "failed_fits": failed,
                "max_rank": max_rank,
                "ecdf_max_deviation": float(np.max(np.abs(ecdf - points))),
                "gamma": gamma,
                "p_value": p_value,
                "within_95_band": p_value > 1 - BAND_PROB,
                "passes": p_value > threshold,
                "contraction": contraction if kind != "log_likelihood" else np.nan,
                "informed_by": informed_by(contraction) if kind != "log_likelihood" else "",
                **failure_dependence(group["true_value"], failed_truths, quantity),
            }
        )
    return pd.DataFrame(table, columns=SUMMARY_COLUMNS)


def failure_dependence(ranked: pd.Series, failed_truths, quantity: str) -> dict:
    """Median true value in the ranked and in the failed fits, and the Mann-Whitney p-value."""
    failed = failed_truths.get_group(quantity).dropna() if quantity in failed_truths.groups else []
    ranked = ranked.dropna()
    if len(failed) == 0 or len(ranked) == 0:
        return {
            "true_median_ranked": float(np.median(ranked)) if len(ranked) else np.nan,
            "true_median_failed": np.nan,
            "failure_p_value": np.nan,
        }
    return {
        "true_median_ranked": float(np.median(ranked)),
        "true_median_failed": float(np.median(failed)),
        "failure_p_value": float(mannwhitneyu(failed, ranked).pvalue),
    }


def failure_dependent(summary: pd.DataFrame) -> pd.DataFrame:
    """Parameters whose true values differ between failed and ranked fits (Bonferroni)."""
    parameters = summary[summary["kind"] == "parameter"]
    level = FAMILYWISE_LEVEL / max(len(parameters), 1)
    return parameters[parameters["failure_p_value"] < level].sort_values("failure_p_value")


def median_contraction(posterior_iqr: pd.Series, true_values: pd.Series) -> float:
    """``1 - (posterior IQR / prior IQR)^2``, the median over replicates."""
    lower, upper = np.quantile(true_values, [0.25, 0.75])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (posterior_iqr.to_numpy() / (upper - lower)) ** 2
    return float(np.median(1 - ratio)) if len(ratio) > 1 else np.nan


def fits_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per replicate: status, what was tried, the gate's message and its seeds."""
    columns = ["replicate", "status", "attempts", "message", "seed_data", "seed_fit"]
    present = [c for c in columns if c in rows.columns]
    return (
        rows.drop_duplicates("replicate")[present].sort_values("replicate").reset_index(drop=True)
    )


def verdict(summary: pd.DataFrame, fits: pd.DataFrame) -> str:
    """One line: did every quantity pass, and how many fits failed the gate."""
    failed = int((fits["status"] != "ok").sum())
    bad = summary.loc[~summary["passes"], "quantity"].tolist()
    head = (
        f"SBC passed: the rank ECDFs of all {len(summary)} quantities stay within their "
        f"simultaneous bands at family-wise level {FAMILYWISE_LEVEL:g} (Bonferroni)"
        if not bad
        else f"SBC FAILED for {len(bad)} of {len(summary)} quantities: {', '.join(bad[:8])}"
        + (" ..." if len(bad) > 8 else "")
    )
    return f"{head}; {failed} of {len(fits)} fits failed the gate (excluded from the ranks)"
