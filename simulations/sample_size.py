"""The n at which power reaches a target, read off the simulated grid, with an interval.

The method (validated by simulation in ``simulations/sample_size_validation.py``, against power
curves known in closed form; README "Sample size"):

1. **Monotone power.** The power estimates ``k/m`` at the grid's n are made non-decreasing in
   n by weighted isotonic regression (weights ``m``; ``scipy.optimize.isotonic_regression``):
   true power does not fall as n grows, so a dip is Monte Carlo noise.
2. **Local interpolation.** Between the two grid n that bracket the target, probit(power) is
   interpolated linearly in sqrt(n). That is exact for a z test, whose power is
   ``Phi(delta sqrt(n) - z)``, and close for tests whose power behaves like it locally. Only the
   two bracketing points are used: no curve shape is imposed on the whole grid.
3. **Interval.** The same interpolation of the pointwise Wilson bounds (``level``), made
   monotone in n (the upper bound at n is the smallest upper bound at or beyond n, the lower
   bound the largest at or below n, both valid when true power rises with n): ``n_low`` is
   where the upper bound reaches the target, ``n_high`` where the lower bound does.

Reported n are whole numbers: the smallest integer at or above the real-valued crossing.
The interpolation was validated on grids whose neighbouring n differ by at most
``MAX_VALIDATED_STEP`` (1.5x); a crossing between grid points further apart is reported with
status ``coarse_grid``, and a target reached before the first or not by the last grid point
is reported as such, never extrapolated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import isotonic_regression

from simulations.summarise import wilson_interval

CURVE_KEYS = ["design", "endpoint", "analysis"]
SAMPLE_SIZE_COLUMNS = [
    *CURVE_KEYS,
    "target_power",
    "n_required",
    "n_low",
    "n_high",
    "n_real",
    "n_below",
    "n_above",
    "n_min_grid",
    "n_max_grid",
    "status",
    "note",
]
#: Largest ratio of neighbouring grid n for which the interpolation was validated.
MAX_VALIDATED_STEP = 1.5


def monotone_power(successes, trials) -> np.ndarray:
    """Power per grid point, made non-decreasing in n (weighted isotonic regression).

    Parameters
    ----------
    successes, trials : array_like
        Counts per grid point, in increasing n; ``trials > 0``.

    Returns
    -------
    numpy.ndarray
        The isotonic fit of ``successes / trials`` with weights ``trials``.
    """
    k = np.asarray(successes, dtype=float)
    m = np.asarray(trials, dtype=float)
    return isotonic_regression(k / m, weights=m, increasing=True).x


def monotone_bounds(successes, trials, *, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise Wilson bounds made monotone in n.

    Parameters
    ----------
    successes, trials : array_like
        Counts per grid point, in increasing n.
    level : float
        Two-sided level of each Wilson interval.

    Returns
    -------
    tuple of numpy.ndarray
        ``(low, high)``: ``low`` is the running maximum of the lower bounds from the left and
        ``high`` the running minimum of the upper bounds from the right.
    """
    low, high = wilson_interval(np.asarray(successes), np.asarray(trials), level=level)
    low, high = np.atleast_1d(low), np.atleast_1d(high)
    return np.maximum.accumulate(low), np.minimum.accumulate(high[::-1])[::-1]


def crossing(n, power, target: float, *, floor: float) -> float:
    """Real-valued n where a non-decreasing power sequence reaches ``target``.

    Parameters
    ----------
    n : array_like
        Grid n, increasing.
    power : array_like
        Non-decreasing power at each n.
    target : float
        Target power in (0, 1).
    floor : float
        Power values are clipped to ``[floor, 1 - floor]`` before the probit transform.

    Returns
    -------
    float
        ``-inf`` if the first grid point already reaches the target, ``inf`` if the last does
        not, else the n between the bracketing grid points at which the probit of power,
        interpolated linearly in sqrt(n), equals the probit of ``target``.
    """
    n = np.asarray(n, dtype=float)
    power = np.clip(np.asarray(power, dtype=float), floor, 1 - floor)
    if power[0] >= target:
        return -np.inf
    if power[-1] < target:
        return np.inf
    above = int(np.flatnonzero(power >= target)[0])
    x0, x1 = np.sqrt(n[above - 1]), np.sqrt(n[above])
    z0, z1 = stats.norm.ppf(power[above - 1 : above + 1])
    x = x0 + (stats.norm.ppf(target) - z0) * (x1 - x0) / (z1 - z0)
    return float(np.clip(x * x, n[above - 1], n[above]))  # rounding must not leave the interval


def interpolated_curve(n, successes, trials, *, points: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The monotone power curve as the method reads it, for drawing: ``(n, power)``.

    Between neighbouring grid points, probit(power) is linear in sqrt(n) (``points`` values
    per interval); power of exactly 0 or 1 is clipped as in :func:`estimate_sample_size`.
    """
    n = np.asarray(n, dtype=float)
    m = np.asarray(trials, dtype=float)
    floor = 0.5 / (m.max() + 1)
    z = stats.norm.ppf(np.clip(monotone_power(successes, m), floor, 1 - floor))
    x = np.linspace(np.sqrt(n[0]), np.sqrt(n[-1]), points * (n.size - 1) + 1)
    return x**2, stats.norm.cdf(np.interp(x, np.sqrt(n), z))


def whole_n(n_real: float) -> float:
    """The smallest whole n at or above a real-valued crossing (infinities kept)."""
    return float(np.ceil(n_real - 1e-9)) if np.isfinite(n_real) else n_real


def estimate_sample_size(n, successes, trials, target: float, *, level: float = 0.95) -> dict:
    """The n reaching ``target`` power and its interval, from counts on a grid of n.

    Parameters
    ----------
    n : array_like
        Grid n, increasing, at least two.
    successes, trials : array_like
        Successes and replicates at each n; ``trials > 0``.
    target : float
        Target power in (0, 1).
    level : float, default 0.95
        Level of the pointwise Wilson bounds that give ``n_low`` and ``n_high``.

    Returns
    -------
    dict
        ``n_real`` (the real-valued crossing: ``-inf`` below the grid, ``inf`` beyond it),
        ``n_required``, ``n_low``, ``n_high`` (whole numbers; ``-inf`` / ``inf`` where the
        crossing lies below / beyond the grid; in the table an ``n_high`` below the grid is
        its first n, an upper bound), and ``n_below``, ``n_above`` (the grid points
        bracketing the point estimate; NaN outside the grid).
    """
    n = np.asarray(n, dtype=float)
    m = np.asarray(trials, dtype=float)
    floor = 0.5 / (m.max() + 1)
    point = crossing(n, monotone_power(successes, m), target, floor=floor)
    low, high = monotone_bounds(successes, m, level=level)
    inside = np.isfinite(point)
    above = int(np.searchsorted(n, point)) if inside else 0
    return {
        "n_real": point,
        "n_required": whole_n(point),
        "n_low": whole_n(crossing(n, high, target, floor=floor)),
        "n_high": whole_n(crossing(n, low, target, floor=floor)),
        "n_below": n[above - 1] if inside else np.nan,
        "n_above": n[above] if inside else np.nan,
    }


def sample_size_table(
    power: pd.DataFrame, *, targets=(0.8, 0.9), level: float = 0.95
) -> pd.DataFrame:
    """The n reaching each target power, per (design, endpoint, analysis), with its interval.

    Counts are taken the conservative way: successes ``power_all * n_reps`` out of
    ``n_reps``, failed analyses counting as non-successes.

    Parameters
    ----------
    power : pandas.DataFrame
        Output of :func:`simulations.summarise.power_table` (or its CSV); only
        ``scenario == "alternative"`` rows with replicates are used. Left unchanged.
    targets : sequence of float, default (0.8, 0.9)
        Target powers, each in (0, 1).
    level : float, default 0.95
        Level of the pointwise Wilson bounds that give ``n_low`` and ``n_high``.

    Returns
    -------
    pandas.DataFrame
        Columns ``SAMPLE_SIZE_COLUMNS``, one row per (design, endpoint, analysis, target).
        ``status``: ``ok``; ``coarse_grid`` (the bracketing grid points are more than
        ``MAX_VALIDATED_STEP`` apart, where the method was not validated); ``below_grid``
        (the smallest n simulated already reaches the target: ``n_required`` is that n, an
        upper bound); ``beyond_grid`` (the largest n simulated does not: no n given);
        ``not_estimable`` (fewer than 2 grid points). ``n_low`` is blank where the interval
        reaches below the grid, ``n_high`` where it reaches beyond it; ``note`` says so.
    """
    alternative = power.loc[power["scenario"].eq("alternative") & power["n_reps"].gt(0)]
    rows = []
    for keys, group in alternative.groupby(CURVE_KEYS, sort=True):
        group = group.sort_values("n")
        rows += curve_rows(group, dict(zip(CURVE_KEYS, keys, strict=True)), targets, level)
    return pd.DataFrame(rows, columns=SAMPLE_SIZE_COLUMNS)


def curve_rows(group: pd.DataFrame, keys: dict, targets, level: float) -> list[dict]:
    """Sample-size rows, one per target, for one (design, endpoint, analysis) power curve."""
    n = group["n"].to_numpy(dtype=float)
    trials = group["n_reps"].to_numpy(dtype=float)
    successes = np.rint(group["power_all"].to_numpy() * trials)
    grid = {**keys, "n_min_grid": int(n.min()), "n_max_grid": int(n.max())}
    if n.size < 2:
        blank = dict.fromkeys(["n_required", "n_low", "n_high", "n_real", "n_below", "n_above"])
        note = "fewer than 2 grid points"
        return [
            {**grid, **blank, "target_power": t, "status": "not_estimable", "note": note}
            for t in targets
        ]
    rows = []
    for target in targets:
        estimate = estimate_sample_size(n, successes, trials, target, level=level)
        rows.append({**grid, "target_power": target, **described(estimate, n, target)})
    return rows


def described(estimate: dict, n: np.ndarray, target: float) -> dict:
    """An estimate as table columns: infinities blanked, with its status and note."""
    notes = []
    point = estimate["n_real"]
    if point == -np.inf:
        status = "below_grid"
        notes.append(
            f"power at the smallest n simulated ({n[0]:g}) already reaches {target:g}: add "
            "smaller n to trial.n to find the smallest that suffices"
        )
    elif point == np.inf:
        status = "beyond_grid"
        notes.append(
            f"power at the largest n simulated ({n[-1]:g}) is below {target:g}: add larger n "
            "to trial.n"
        )
    elif estimate["n_above"] / estimate["n_below"] > MAX_VALIDATED_STEP:
        status = "coarse_grid"
        notes.append(
            f"crossing between n={estimate['n_below']:g} and n={estimate['n_above']:g}, "
            f"further apart than the validated {MAX_VALIDATED_STEP:g}x: add n between them"
        )
    else:
        status = "ok"
    if estimate["n_low"] == -np.inf:
        notes.append(f"interval reaches below the grid (n_low < {n[0]:g})")
    if estimate["n_high"] == np.inf:
        notes.append(f"interval reaches beyond the grid (n_high > {n[-1]:g})")
    finite = {
        key: (value if np.isfinite(value) else np.nan)
        for key, value in estimate.items()
        if key != "n_required"
    }
    if estimate["n_high"] == -np.inf:  # even the lower bound reaches the target at n_min
        finite["n_high"] = n[0]
    required = estimate["n_required"]
    finite["n_required"] = (
        n[0] if status == "below_grid" else (required if np.isfinite(required) else np.nan)
    )
    return {**finite, "status": status, "note": "; ".join(notes)}
