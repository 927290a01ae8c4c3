"""Summarise simulated trial replicates: power, type-I error and the sample size for a target power.

Pure functions of the replicate records the simulation engine stores (one row per replicate,
endpoint and analysis); nothing here reads or writes files. Failed analyses (``status`` other
than ``"ok"``) are never dropped silently: every table reports how many there were, and the
``*_all`` power columns and the sample-size fit count them as non-successes.

The sample-size curve is a binomial GLM with a probit link on log(n),
``power(n) = Phi(intercept + slope * log(n))``, fitted to the replicate counts per n. The
interval for the n that reaches a target power is where the pointwise confidence band of the
linear predictor crosses the target (the Fieller interval for ``(probit(target) - a) / b``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.tools.sm_exceptions import (
    ConvergenceWarning,
    PerfectSeparationError,
    PerfectSeparationWarning,
)

GROUP_KEYS = ["design", "scenario", "endpoint", "analysis", "n"]
CURVE_KEYS = ["design", "endpoint", "analysis"]
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
    "note",
]
SAMPLE_SIZE_COLUMNS = [
    *CURVE_KEYS,
    "target_power",
    "n_required",
    "n_low",
    "n_high",
    "n_min_grid",
    "n_max_grid",
    "status",
    "note",
]
#: Half-width, in Monte Carlo standard errors, within which a rejection rate counts as nominal.
TYPE_I_TOLERANCE_MCSE = 3.0


class CurveNotEstimable(ValueError):
    """The monotone power curve cannot be fitted to these counts; the message says why."""


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
        nominal size, ``sqrt(nominal (1 - nominal) / m)``.
    """
    is_null = power["scenario"].astype(str).str.startswith("null")
    null = power.loc[is_null].rename(columns={"power": "rejection_rate"})
    gap = (null["rejection_rate"] - null["nominal_level"]).abs()
    # The MCSE under the null hypothesis (rate = nominal), not the estimated one, which is 0
    # when no replicate rejected.
    null_mcse = pd.Series(
        binomial_mcse(null["nominal_level"], null["n_reps"] - null["n_failed"]), index=null.index
    )
    within = (gap <= TYPE_I_TOLERANCE_MCSE * null_mcse).astype("boolean")
    within[gap.isna() | null_mcse.isna()] = pd.NA
    return null.assign(within_3_mcse=within)[TYPE_I_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class PowerCurve:
    """Fitted ``power(n) = Phi(intercept + slope * log(n))`` with the covariance of the two.

    Attributes
    ----------
    intercept, slope : float
        Probit-scale coefficients; ``slope > 0``.
    covariance : numpy.ndarray
        2 x 2 covariance of ``(intercept, slope)``.
    """

    intercept: float
    slope: float
    covariance: np.ndarray

    def linear_predictor(self, n) -> tuple[np.ndarray, np.ndarray]:
        """Probit-scale fit and its delta-method standard error.

        Parameters
        ----------
        n : array_like
            Numbers of treated patients, > 0.

        Returns
        -------
        tuple of numpy.ndarray
            ``(eta, se)``: ``intercept + slope * log(n)`` and its standard error.
        """
        x = np.log(np.asarray(n, dtype=float))
        cov = self.covariance
        variance = cov[0, 0] + 2 * cov[0, 1] * x + cov[1, 1] * x**2
        return self.intercept + self.slope * x, np.sqrt(np.maximum(variance, 0))

    def power(self, n) -> np.ndarray:
        """Fitted power.

        Parameters
        ----------
        n : array_like
            Numbers of treated patients, > 0.

        Returns
        -------
        numpy.ndarray
            ``Phi(intercept + slope * log(n))``.
        """
        return stats.norm.cdf(self.linear_predictor(n)[0])

    def band(self, n, *, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise confidence band of the fitted power (Wald on the probit scale).

        Parameters
        ----------
        n : array_like
            Numbers of treated patients, > 0.
        level : float
            Two-sided confidence level.

        Returns
        -------
        tuple of numpy.ndarray
            ``(low, high)`` power at each n.
        """
        eta, se = self.linear_predictor(n)
        crit = stats.norm.isf((1 - level) / 2)
        return stats.norm.cdf(eta - crit * se), stats.norm.cdf(eta + crit * se)

    def n_at(self, target: float) -> float:
        """Real-valued n at which the fitted power equals ``target``.

        Parameters
        ----------
        target : float
            Target power in (0, 1).

        Returns
        -------
        float
            ``exp((probit(target) - intercept) / slope)``; inf if it overflows.
        """
        with np.errstate(over="ignore"):
            return float(np.exp((stats.norm.ppf(target) - self.intercept) / self.slope))

    def n_interval(self, target: float, *, level: float) -> tuple[float, float]:
        """Real-valued n at which the upper and the lower band reach ``target``.

        Parameters
        ----------
        target : float
            Target power in (0, 1).
        level : float
            Two-sided level of the pointwise band.

        Returns
        -------
        tuple of float
            ``(n_low, n_high)``: the Fieller interval for the crossing, i.e. the n whose band
            contains ``target``; ``(nan, nan)`` when that set is unbounded (the slope is not
            distinguishable from 0 at ``level``).
        """
        crit2 = stats.norm.isf((1 - level) / 2) ** 2
        gap = self.intercept - stats.norm.ppf(target)
        cov = self.covariance
        # (gap + slope x)^2 = crit^2 var(x), a quadratic in x = log(n); its roots bound the set.
        quad = self.slope**2 - crit2 * cov[1, 1]
        lin = 2 * (gap * self.slope - crit2 * cov[0, 1])
        const = gap**2 - crit2 * cov[0, 0]
        discriminant = lin**2 - 4 * quad * const
        if quad <= 0 or discriminant < 0:
            return float("nan"), float("nan")
        roots = (-lin + np.array([-1.0, 1.0]) * np.sqrt(discriminant)) / (2 * quad)
        with np.errstate(over="ignore"):
            low, high = np.exp(roots)
        return float(low), float(high)


def is_separated(n, successes, trials) -> bool:
    """Whether the counts are (quasi-)separated in n, so the probit MLE does not exist.

    Parameters
    ----------
    n, successes, trials : array_like
        Per-n grid value, success count and trial count.

    Returns
    -------
    bool
        True if every failure lies at or below every success in n, or every success at or
        below every failure (this includes all-0 and all-1 power).
    """
    n = np.asarray(n, dtype=float)
    k = np.asarray(successes, dtype=float)
    m = np.asarray(trials, dtype=float)
    with_success, with_failure = n[k > 0], n[k < m]
    if with_success.size == 0 or with_failure.size == 0:
        return True
    rising = with_failure.max() <= with_success.min()
    falling = with_success.max() <= with_failure.min()
    return bool(rising or falling)


def monotone_power_curve(n, successes, trials) -> PowerCurve:
    """Fit ``power(n) = Phi(a + b log n)`` by a binomial GLM with probit link.

    Parameters
    ----------
    n : array_like
        Number of treated patients per simulated trial, one entry per grid point, > 0.
    successes : array_like
        Successes at each n (rounded to whole numbers).
    trials : array_like
        Replicates at each n, > 0.

    Returns
    -------
    PowerCurve
        The coefficients and their covariance, with methods to evaluate the curve and band.

    Raises
    ------
    CurveNotEstimable
        If there are fewer than 2 distinct n, the counts are separated in n (e.g. all-0 or
        all-1 power), the fit fails or does not converge, or the slope is not positive.
    """
    n = np.asarray(n, dtype=float)
    k = np.rint(np.asarray(successes, dtype=float))
    m = np.asarray(trials, dtype=float)
    if np.unique(n).size < 2:
        raise CurveNotEstimable("fewer than 2 distinct n in the grid")
    if is_separated(n, k, m):
        raise CurveNotEstimable("power is 0 or 1 on either side of one n (separation)")
    params, covariance = fit_probit_glm(np.log(n), k, m)
    if not params[1] > 0:
        raise CurveNotEstimable(f"fitted slope on log(n) is not positive ({params[1]:.3g})")
    return PowerCurve(float(params[0]), float(params[1]), covariance)


def fit_probit_glm(log_n, successes, trials) -> tuple[np.ndarray, np.ndarray]:
    """Binomial GLM with probit link of successes on ``log_n``; coefficients and covariance.

    Parameters
    ----------
    log_n, successes, trials : numpy.ndarray
        Covariate, success counts and trial counts per grid point.

    Returns
    -------
    tuple of numpy.ndarray
        ``(params, covariance)``: ``[intercept, slope]`` and their 2 x 2 covariance.

    Raises
    ------
    CurveNotEstimable
        If statsmodels fails, warns of non-convergence, or returns non-finite values.
    """
    endog = np.column_stack([successes, trials - successes])
    exog = sm.add_constant(log_n, has_constant="add")
    family = sm.families.Binomial(link=sm.families.links.Probit())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            # Separation is ruled out exactly beforehand; statsmodels also raises this warning
            # when the curve fits the observed shares perfectly, which is no reason to refuse.
            warnings.simplefilter("ignore", PerfectSeparationWarning)
            result = sm.GLM(endog, exog, family=family).fit()
            params, covariance = np.asarray(result.params), np.asarray(result.cov_params())
    except (
        ValueError,
        np.linalg.LinAlgError,
        PerfectSeparationError,
        ConvergenceWarning,
    ) as err:
        raise CurveNotEstimable(f"GLM fit failed: {type(err).__name__}: {err}") from err
    if not (np.isfinite(params).all() and np.isfinite(covariance).all()):
        raise CurveNotEstimable("GLM fit gave non-finite coefficients or covariance")
    return params, covariance


def sample_size_table(
    power: pd.DataFrame, *, targets=(0.8, 0.9), level: float = 0.95
) -> pd.DataFrame:
    """The n reaching each target power, from a probit-on-log(n) curve per analysis.

    Counts are taken the conservative way: successes ``power_all * n_reps`` out of
    ``n_reps``, failed analyses counting as non-successes.

    Parameters
    ----------
    power : pandas.DataFrame
        Output of :func:`power_table` (or its CSV); only ``scenario == "alternative"`` rows are
        used. Left unchanged.
    targets : sequence of float, default (0.8, 0.9)
        Target powers, each in (0, 1).
    level : float, default 0.95
        Level of the pointwise confidence band that gives ``n_low`` and ``n_high``.

    Returns
    -------
    pandas.DataFrame
        Columns ``SAMPLE_SIZE_COLUMNS``, one row per (design, endpoint, analysis, target).
        ``n_required``, ``n_low`` and ``n_high`` are the smallest whole n at which the fitted
        curve, its upper band and its lower band reach the target (float columns, NaN when
        not estimable). ``status`` is ``"ok"``, ``"extrapolated"`` (the fitted crossing lies
        outside the simulated n grid) or ``"not_estimable"`` (fewer than 2 distinct n,
        separation such as all-0 or all-1 power, a failed fit, a slope that is not positive,
        or one not distinguishable from 0 at ``level`` so that the interval for n is
        unbounded; ``note`` says which). Degenerate fits never raise.
    """
    alternative = power.loc[power["scenario"].eq("alternative") & power["n_reps"].gt(0)]
    rows = []
    for keys, group in alternative.groupby(CURVE_KEYS, sort=True):
        group = group.sort_values("n")
        rows += curve_rows(group, dict(zip(CURVE_KEYS, keys, strict=True)), targets, level)
    return pd.DataFrame(rows, columns=SAMPLE_SIZE_COLUMNS)


def curve_rows(group: pd.DataFrame, keys: dict, targets, level: float) -> list[dict]:
    """Sample-size rows, one per target, for one (design, endpoint, analysis) power curve.

    Parameters
    ----------
    group : pandas.DataFrame
        Alternative-scenario power-table rows of one analysis, one per n.
    keys : dict
        The design, endpoint and analysis, copied into each row.
    targets : sequence of float
        Target powers.
    level : float
        Confidence level of the band.

    Returns
    -------
    list of dict
        One row per target with the ``SAMPLE_SIZE_COLUMNS`` keys.
    """
    n = group["n"].to_numpy(dtype=float)
    trials = group["n_reps"].to_numpy(dtype=float)
    grid = {**keys, "n_min_grid": int(n.min()), "n_max_grid": int(n.max())}
    try:
        curve = monotone_power_curve(n, group["power_all"].to_numpy() * trials, trials)
    except CurveNotEstimable as err:
        return [{**grid, **not_estimable_row(t, str(err))} for t in targets]
    return [{**grid, **crossing(curve, t, level, n.min(), n.max())} for t in targets]


def not_estimable_row(target: float, note: str) -> dict:
    """A sample-size row for ``target`` that reports no n, with the reason in ``note``."""
    blank = {"n_required": np.nan, "n_low": np.nan, "n_high": np.nan}
    return {"target_power": target, **blank, "status": "not_estimable", "note": note}


def crossing(curve: PowerCurve, target: float, level: float, n_min: float, n_max: float) -> dict:
    """Where a fitted curve and its band reach ``target``, with status and note.

    Parameters
    ----------
    curve : PowerCurve
        The fitted curve.
    target : float
        Target power in (0, 1).
    level : float
        Confidence level of the band.
    n_min, n_max : float
        The simulated n grid's ends.

    Returns
    -------
    dict
        ``target_power, n_required, n_low, n_high, status, note``.
    """
    n_real = curve.n_at(target)
    n_low, n_high = curve.n_interval(target, level=level)
    if np.isnan(n_low) or not np.isfinite(n_real):
        return not_estimable_row(
            target,
            f"slope on log(n) is not clearly positive: the {level:g} interval for n is "
            f"unbounded (point estimate n={n_real:.5g})",
        )
    is_inside = n_min <= n_real <= n_max
    note = (
        ""
        if is_inside
        else f"fitted crossing at n={n_real:.5g} lies outside the simulated grid "
        f"[{n_min:g}, {n_max:g}]; extrapolated from the probit curve"
    )
    return {
        "target_power": target,
        "n_required": float(np.ceil(n_real)),
        "n_low": float(np.ceil(n_low)),
        "n_high": float(np.ceil(n_high)),
        "status": "ok" if is_inside else "extrapolated",
        "note": note,
    }
