"""Simulation study of the sample-size method (``simulations.sample_size``) itself.

ADEMP (Morris, White & Crowther 2019):

- **Aims.** Does the interval ``[n_low, n_high]`` cover the true n for a target power in at
  least 93% of runs, and is the point estimate within 2% of the true n on average, on the
  grids and replicate counts the shipped plans use? Both criteria are required on the curves
  of real tests (``TEST_CURVES``); on the stress curve coverage is required and the bias is
  reported.
- **Data-generating mechanisms.** A power curve known in closed form, evaluated at a plan's n
  grid; at each n the number of successes out of ``m`` replicates is binomial with that power
  (what the power engine produces, one cell at a time). Curves: the one-sided z test
  (``Phi(delta sqrt(n) - z_0.975)``, the reference), the one-sided one-sample t test
  (noncentral t; not linear in sqrt(n) at small n) and a stress curve, logistic in log(n)
  with slope 2 (a flatter shape than either test). Each curve is placed so that 80% power is
  reached at fractions 0.1, 0.3, 0.5, 0.7, 0.9 of the grid's log range; the 90% target of the
  same curve is kept where it lies inside the grid with a margin (``TOP_MARGIN``), so that runs
  whose estimate falls beyond the grid do not bias the rest. Grids: every shipped plan's ``n``
  (``simulations/plans/*.toml``), with ``m`` = the plan's initial replicates and smaller counts
  (``SMALL_REPLICATES`` by default; the pipeline passes the count its reduced scale runs).
- **Estimands.** The true n: the smallest whole n whose power reaches the target
  (``n_true``), and the real-valued crossing (``n_true_real``).
- **Methods.** ``simulations.sample_size.estimate_sample_size`` at level 0.95.
- **Performance measures**, each with its Monte Carlo SE: coverage of ``n_true`` by
  ``[n_low, n_high]`` (an end beyond the grid counts as unbounded); mean relative error of the
  real-valued estimate, ``n_real / n_true_real - 1`` (the criterion: the reported whole n adds
  up to one patient of rounding, which alone exceeds 2% below n = 50); the same for the
  reported whole n against ``n_true``; the share of runs with an estimate inside the grid.

Seeds: scenario ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``, so a scenario's runs
do not depend on which other scenarios run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import brentq
from scipy.special import expit, logit

from simulations.sample_size import estimate_sample_size

PLANS_DIR = Path(__file__).parent / "plans"
CURVES = ("z_test", "t_test", "logistic_log_n")
#: The curves of real tests, on which both criteria must hold; the logistic stress curve must
#: keep the coverage criterion, and its bias is reported (README "Sample size").
TEST_CURVES = ("z_test", "t_test")
POSITIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
TARGETS = (0.8, 0.9)
ONE_SIDED_ALPHA = 0.025
LOGISTIC_SLOPE = 2.0
#: A target is kept only where its true crossing lies at least this factor below the grid's top.
TOP_MARGIN = 1.15
MIN_COVERAGE = 0.93
MAX_RELATIVE_ERROR = 0.02
LEVEL = 0.95
#: Smaller replicate counts per cell validated besides each plan's own by default (a quick
#: ``cd49d power --replicates 100`` run); ``make reproduce`` asks for its own count instead.
SMALL_REPLICATES = (100,)
RESULT_COLUMNS = [
    "plan",
    "curve",
    "position",
    "target_power",
    "m",
    "runs",
    "n_true",
    "n_true_real",
    "coverage",
    "coverage_mcse",
    "relative_error",
    "relative_error_mcse",
    "relative_error_whole",
    "relative_error_whole_mcse",
    "estimable",
    "mean_width",
    "passed",
]


@dataclass(frozen=True)
class Scenario:
    """One data-generating mechanism: a closed-form curve, a grid and a target."""

    plan: str
    curve: str
    position: float
    target: float
    grid: tuple[float, ...]
    m: int
    parameter: float

    def power(self, n) -> np.ndarray:
        """True power at ``n`` (real-valued n allowed)."""
        return curve_power(self.curve, self.parameter, n)

    def true_n(self) -> tuple[int, float]:
        """The smallest whole n reaching the target, and the real-valued crossing."""
        real = brentq(lambda x: self.power(x) - self.target, 1.0001, 1e6)
        whole = int(np.ceil(real - 1e-9))
        while self.power(whole) < self.target:  # guard against a root one ulp short
            whole += 1
        return whole, float(real)


def curve_power(curve: str, parameter: float, n) -> np.ndarray:
    """Closed-form power at ``n`` of a curve family with its one parameter.

    ``z_test``: effect size ``delta``; ``t_test``: standardised effect of a one-sample t test
    (n - 1 degrees of freedom, real-valued n allowed); ``logistic_log_n``: the intercept ``a``
    of ``expit(a + LOGISTIC_SLOPE log n)``.
    """
    n = np.asarray(n, dtype=float)
    if curve == "z_test":
        return stats.norm.cdf(parameter * np.sqrt(n) - stats.norm.isf(ONE_SIDED_ALPHA))
    if curve == "t_test":
        df = np.maximum(n - 1, 1e-3)
        return stats.nct.sf(stats.t.isf(ONE_SIDED_ALPHA, df), df, parameter * np.sqrt(n))
    if curve == "logistic_log_n":
        return expit(parameter + LOGISTIC_SLOPE * np.log(n))
    raise ValueError(f"unknown curve {curve!r}; expected one of {CURVES}")


def parameter_for(curve: str, n_at_80: float) -> float:
    """The curve's parameter that puts 80% power at ``n_at_80``."""
    if curve == "z_test":
        return (stats.norm.isf(ONE_SIDED_ALPHA) + stats.norm.ppf(0.8)) / np.sqrt(n_at_80)
    if curve == "logistic_log_n":
        return float(logit(0.8) - LOGISTIC_SLOPE * np.log(n_at_80))
    return brentq(lambda d: curve_power(curve, d, n_at_80) - 0.8, 1e-4, 50.0)


def shipped_grids(
    small: tuple[int, ...] = SMALL_REPLICATES,
) -> dict[str, tuple[tuple[float, ...], tuple[int, ...]]]:
    """Each shipped plan's n grid and replicate counts (its initial ones and ``small``), by
    plan file stem."""
    from simulations.plan import load_plan

    grids = {}
    for path in sorted(PLANS_DIR.glob("*.toml")):
        plan = load_plan(path)
        counts = tuple(sorted({plan.replicates.initial, *small}))
        grids[path.stem] = (tuple(float(n) for n in plan.trial.n), counts)
    return grids


def scenarios(grids: dict | None = None, curves=CURVES) -> list[Scenario]:
    """Every (plan grid, replicates, curve, position, target) whose true crossing lies inside
    the grid. ``grids`` maps a name to ``(grid, replicate counts)``."""
    grids = shipped_grids() if grids is None else grids
    found = []
    for plan, (grid, counts) in grids.items():
        low, high = np.log(grid[0]), np.log(grid[-1])
        for m, curve, position, target in itertools.product(counts, curves, POSITIONS, TARGETS):
            parameter = parameter_for(curve, float(np.exp(low + position * (high - low))))
            scenario = Scenario(plan, curve, position, target, grid, m, parameter)
            whole, real = scenario.true_n()
            if grid[0] < real and real * TOP_MARGIN <= grid[-1] and whole > grid[0]:
                found.append(scenario)
    return found


def run_scenario(scenario: Scenario, runs: int, rng: np.random.Generator) -> dict:
    """Performance of the method over ``runs`` simulated grids of one scenario."""
    n = np.asarray(scenario.grid)
    trials = np.full(n.size, scenario.m, dtype=float)
    counts = rng.binomial(scenario.m, scenario.power(n), size=(runs, n.size))
    estimates = [estimate_sample_size(n, k, trials, scenario.target, level=LEVEL) for k in counts]
    whole, real = scenario.true_n()
    low = np.array([e["n_low"] for e in estimates])
    high = np.array([e["n_high"] for e in estimates])
    covered = (low <= whole) & (whole <= high)
    point = np.array([e["n_real"] for e in estimates])
    inside = np.isfinite(point)
    relative = point[inside] / real - 1
    relative_whole = np.array([e["n_required"] for e in estimates])[inside] / whole - 1
    bounded = np.isfinite(low) & np.isfinite(high)
    width = high[bounded] - low[bounded]
    row = {
        "plan": scenario.plan,
        "curve": scenario.curve,
        "position": scenario.position,
        "target_power": scenario.target,
        "m": scenario.m,
        "runs": runs,
        "n_true": whole,
        "n_true_real": real,
        "coverage": covered.mean(),
        "coverage_mcse": np.sqrt(covered.mean() * (1 - covered.mean()) / runs),
        **mean_and_mcse("relative_error", relative),
        **mean_and_mcse("relative_error_whole", relative_whole),
        "estimable": inside.mean(),
        "mean_width": width.mean() if width.size else np.nan,
    }
    accurate = abs(row["relative_error"]) <= MAX_RELATIVE_ERROR
    row["passed"] = bool(
        row["coverage"] >= MIN_COVERAGE and (accurate or scenario.curve not in TEST_CURVES)
    )
    return row


def mean_and_mcse(name: str, values: np.ndarray) -> dict:
    """``{name: mean, name_mcse: sd / sqrt(count)}`` (NaN for fewer than 2 values)."""
    if values.size < 2:
        return {name: np.nan, f"{name}_mcse": np.nan}
    return {name: values.mean(), f"{name}_mcse": values.std(ddof=1) / np.sqrt(values.size)}


def validation_study(
    runs: int,
    *,
    seed: int = 20161,
    grids: dict | None = None,
    curves=CURVES,
    small: tuple[int, ...] = SMALL_REPLICATES,
) -> pd.DataFrame:
    """Run the study: one row per scenario with its performance measures and MCSEs.

    Parameters
    ----------
    runs : int
        Simulated grids per scenario (2000 in ``make validate``).
    seed : int, default 20161
        Root seed; scenario ``i`` uses ``SeedSequence(seed, spawn_key=(i,))``.
    grids : dict, optional
        ``{name: (grid, replicate counts)}``; default :func:`shipped_grids` with ``small``.
    curves : sequence of str, default all of ``CURVES``
    small : tuple of int, default ``SMALL_REPLICATES``
        Replicate counts per cell validated besides each plan's own (shipped grids only).

    Returns
    -------
    pandas.DataFrame
        Columns ``RESULT_COLUMNS``; ``passed`` is coverage >= ``MIN_COVERAGE`` and, for the
        ``TEST_CURVES``, ``|relative_error|`` <= ``MAX_RELATIVE_ERROR``.
    """
    rows = []
    grids = shipped_grids(small) if grids is None else grids
    for i, scenario in enumerate(scenarios(grids, curves)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        rows.append(run_scenario(scenario, runs, rng))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def verdict(results: pd.DataFrame) -> str:
    """Scenarios passing, and per curve family the lowest coverage and largest |relative error|."""
    lines = [
        f"{int(results['passed'].sum())} of {len(results)} scenarios pass (coverage >= "
        f"{MIN_COVERAGE:g}; |relative error| <= {MAX_RELATIVE_ERROR:g} for "
        f"{', '.join(TEST_CURVES)})"
    ]
    for (curve, m), rows in results.groupby(["curve", "m"], sort=False):
        low = rows.loc[rows["coverage"].idxmin()]
        worst = rows.loc[rows["relative_error"].abs().idxmax()]
        lines.append(
            f"  {curve}, m = {m}: {len(rows)} scenarios; lowest coverage {low['coverage']:.3f} "
            f"(MCSE {low['coverage_mcse']:.3f}); largest relative error "
            f"{worst['relative_error']:+.4f} (MCSE {worst['relative_error_mcse']:.4f}; "
            f"{worst['plan']}, n_true {worst['n_true']})"
        )
    return "\n".join(lines)
