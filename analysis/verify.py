"""``cd49d verify``: rebuild the pipeline and compare every output with the manifest.

The rebuild copies the source tree (the files git lists, tracked or untracked but not ignored,
less the build products) into a temporary folder and runs ``snakemake`` there with the
configuration the manifest records (``paper/manifest.json``, ``analysis/manifest.py``). Each
output the manifest lists is then compared with the file beside the manifest (itself checked
against the manifest's SHA-256), the way ``COMPARISONS`` declares for it:

- ``Exact`` (deterministic outputs, and every output not declared otherwise): byte for byte;
  where they differ, the first differing column or line is named;
- ``TableRule`` (tables of MCMC and simulation numbers): column by column, numbers within the
  declared tolerances, text (verdicts and statuses included) exactly;
- ``Through`` (files that are not byte-stable, netCDF, PNG, PDF, or per-replicate records):
  through the compared outputs made with or from them (the same job's other outputs, its
  inputs);
- ``Derived`` (``numbers.json``): identical when the outputs it is built from are, and
  otherwise as good as they are.

``--rebuilt DIR`` compares a tree built elsewhere (its results folder at ``DIR/results``)
without rebuilding. Source files whose SHA-256 differs from the manifest's record are named
first: a rebuild of other sources is no test of reproducibility.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.manifest import MANIFEST_PATH, FileHashes, canonical_json, load_manifest

Mcse = Callable[[pd.DataFrame], pd.Series]

#: Tolerances are this many standard errors of the difference between the two builds,
#: sqrt(mcse_a^2 + mcse_b^2): two-sided 6e-5 per value when their Monte Carlo errors are
#: independent (a rebuild on another machine, where floating-point differences make chains
#: diverge), so a table of a few hundred values raises a false alarm about 2% of the time. A
#: rebuild on the same machine with the same seeds is byte-identical and never gets here.
MCSE_MULTIPLE = 4.0
#: sqrt(p (1 - p)) / phi(z_p) at p = 0.025: a 2.5% or 97.5% quantile's MCSE in units of
#: sd / sqrt(ESS) for a normal posterior.
TAIL_QUANTILE_FACTOR = float(np.sqrt(0.025 * 0.975) / stats.norm.pdf(stats.norm.ppf(0.025)))
#: Floating-point rounding between machines: no tolerance of a Monte Carlo table is below it.
FLOATING_POINT_RELATIVE = 1e-9
#: Where the build's results folder lands in a rebuilt tree.
REBUILT_RESULTS = "results"
#: Folders of build products, never copied into the rebuild.
BUILD_FOLDERS = ("results/", "paper/generated/", "paper/figures/", ".snakemake/")

SAME, WITHIN, THROUGH, NOT_COMPARED = "same", "within tolerance", "compared through", "not compared"
DIFFERS, MISSING = "DIFFERS", "missing"
PASSING = (SAME, WITHIN, THROUGH, NOT_COMPARED)
NO_ORIGINAL = (
    "its bytes differ from the manifest's, and the file beside the manifest no longer matches "
    "the manifest either: nothing to compare it with"
)


class VerifyError(Exception):
    """Verification cannot run: no manifest, or the rebuild failed."""


@dataclass(frozen=True)
class Tolerance:
    """How far the numbers of ``columns`` may lie apart in two builds.

    Per row, the largest of ``multiple`` x the combined MCSE sqrt(a^2 + b^2) (``mcse`` gives
    each build's MCSE from its table; blank counts as 0), ``relative`` x the larger magnitude,
    ``absolute``, and floating-point rounding (``FLOATING_POINT_RELATIVE``).
    """

    columns: tuple[str, ...]
    mcse: Mcse | None = None
    mcse_name: str = ""
    multiple: float = MCSE_MULTIPLE
    relative: float = 0.0
    absolute: float = 0.0

    def per_row(self, original: pd.DataFrame, rebuilt: pd.DataFrame, column: str) -> np.ndarray:
        """The tolerance of every row of ``column``."""
        a, b = original[column].to_numpy(float), rebuilt[column].to_numpy(float)
        magnitude = np.fmax(abs(a), abs(b))
        relative = max(self.relative, FLOATING_POINT_RELATIVE)
        limits = [np.full(len(a), self.absolute), relative * magnitude]
        if self.mcse is not None:
            mcse_a = np.nan_to_num(self.mcse(original).to_numpy(float))
            mcse_b = np.nan_to_num(self.mcse(rebuilt).to_numpy(float))
            limits.append(self.multiple * np.hypot(mcse_a, mcse_b))
        return np.nan_to_num(np.fmax.reduce(limits))

    def describe(self) -> str:
        """The tolerance in words, e.g. ``4 x the combined MCSE of a posterior mean``."""
        parts = [f"{self.multiple:g} x the combined {self.mcse_name}"] if self.mcse else []
        parts += [f"{self.relative:g} relative"] if self.relative else []
        parts += [f"{self.absolute:g} absolute"] if self.absolute else []
        return " or ".join(parts)


@dataclass(frozen=True)
class TableRule:
    """How a table (CSV or Parquet) of two builds is compared.

    Numeric columns within ``tolerances`` (any other numeric column within ``otherwise``, or
    equal where it is None), text columns exactly, except the ``not_compared`` column patterns;
    rows matched by ``keys`` (in file order where there are none).
    """

    tolerances: tuple[Tolerance, ...] = ()
    not_compared: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    otherwise: Tolerance | None = None

    def tolerance_for(self, column: str) -> Tolerance | None:
        """The tolerance of ``column``, or None (equal required)."""
        declared = (t for t in self.tolerances if column in t.columns)
        return next(declared, self.otherwise)

    def compares(self, column: str) -> bool:
        return not any(fnmatch.fnmatchcase(column, p) for p in self.not_compared)


@dataclass(frozen=True)
class Exact:
    """A deterministic output: its bytes must be identical (``why`` says why it can be)."""

    why: str


@dataclass(frozen=True)
class Through:
    """An output compared through the outputs made with or from it (``why``: why not itself)."""

    why: str


@dataclass(frozen=True)
class Derived:
    """An output computed from other outputs alone: identical when they are."""

    why: str


# --- Monte Carlo standard errors, per row of a table -----------------------------------------


def column(name: str) -> Mcse:
    """The MCSE the table gives in column ``name``."""
    return lambda table: table[name]


def column_or_one_trial(name: str, trials: str) -> Mcse:
    """The MCSE column, and where it is blank or 0 (a share of 0 or 1) one trial's step,
    1/trials."""
    return lambda table: table[name].where(table[name] > 0, 1 / table[trials])


def posterior_mean_mcse(table: pd.DataFrame) -> pd.Series:
    return table["sd"] / np.sqrt(table["ess_bulk"])


def posterior_sd_mcse(table: pd.DataFrame) -> pd.Series:
    return table["sd"] / np.sqrt(2 * table["ess_bulk"])


def tail_quantile_mcse(table: pd.DataFrame) -> pd.Series:
    return TAIL_QUANTILE_FACTOR * table["sd"] / np.sqrt(table["ess_tail"])


def posterior_probability_mcse(table: pd.DataFrame) -> pd.Series:
    share = table["prob_positive"].clip(0, 1)
    return np.sqrt(share * (1 - share) / table["ess_bulk"])


def count_mcse(name: str) -> Mcse:
    """A count of rare events (failed fits): Poisson, sqrt(count)."""
    return lambda table: np.sqrt(table[name])


def interval_se(low: str, point: str, high: str) -> Mcse:
    """The SE implied by a 95% interval around ``point``: its wider half / 1.96 (the closed
    one where the other is open, blank)."""
    z = stats.norm.ppf(0.975)
    return lambda table: np.fmax(table[high] - table[point], table[point] - table[low]) / z


# --- What is compared how: the one place that declares it ------------------------------------

#: The other numeric columns of a Monte Carlo table (design values, counts, numbers computed
#: without random draws) may differ by floating-point rounding between machines, nothing more.
FLOATING_POINT = Tolerance(("*",), relative=FLOATING_POINT_RELATIVE)

#: MCSE columns (tolerance 0.5 relative or 0.01 absolute below) are themselves estimated from
#: the same draws or replicates and move with the estimate (a power from 0.9 to 0.95 takes its
#: MCSE from 0.030 to 0.022).
#: Verdicts (``within_3_mcse``, ``passes``, ``status``, ...) are text: compared exactly, so a
#: conclusion that flips is reported even when its numbers are within tolerance.

POSTERIOR_SUMMARY = TableRule(
    tolerances=(
        Tolerance(("mean",), posterior_mean_mcse, "MCSE of a posterior mean, sd/sqrt(ess_bulk)"),
        Tolerance(("sd",), posterior_sd_mcse, "MCSE of a posterior SD, sd/sqrt(2 ess_bulk)"),
        Tolerance(
            ("q2.5", "q97.5"),
            tail_quantile_mcse,
            "MCSE of a 2.5% quantile, 2.67 sd/sqrt(ess_tail)",
        ),
        # At 0 or 1 the binomial MCSE vanishes: a few of the ~4000 draws may cross 0.
        Tolerance(
            ("prob_positive",),
            posterior_probability_mcse,
            "MCSE of a posterior probability",
            absolute=0.005,
        ),
        # The diagnostics gate's own resolution (R-hat <= 1.01).
        Tolerance(("rhat",), absolute=0.01),
        # ESS estimates of runs of equal length typically differ by 10-20%.
        Tolerance(("ess_bulk", "ess_tail"), relative=0.3),
    ),
    otherwise=FLOATING_POINT,
)
#: PSIS-LOO from ~4000 draws: its Monte Carlo error is typically below 0.1 elpd (the loo
#: package's MCSE of elpd_loo); 0.5 allows five of them. Stacking weights of nearly equal
#: models swing with small changes of the pointwise elpd; two such models may swap ranks.
LOO = TableRule(
    tolerances=(
        Tolerance(("elpd", "elpd_diff", "p"), absolute=0.5),
        Tolerance(("se", "dse"), relative=0.05),
        Tolerance(("weight",), absolute=0.2),
        Tolerance(("p_worse", "p_better"), absolute=0.05),
        Tolerance(("rank",), absolute=1),
        # Observations with k-hat near 0.7 cross it with the draws.
        Tolerance(("n_pareto_k_above_0.7",), absolute=2),
    ),
    not_compared=("diag_*",),  # notes that quote the numbers compared above
    keys=("model",),
    otherwise=FLOATING_POINT,
)
#: Cross-validation refits behind the gate: the expected CRPS of a held-out subject from ~4000
#: draws has an MC error far below 1% of the sum over subjects; a held-out elpd rests on few
#: effective draws (``median_effective_draws``) and moves more; a fold may pass the gate in one
#: build and fail it in the other.
KFOLD = TableRule(
    tolerances=(
        Tolerance(("crps", "crps_diff"), relative=0.01, absolute=0.5),
        Tolerance(("elpd", "elpd_diff"), absolute=2.0),
        Tolerance(("crps_se", "crps_diff_se", "elpd_se", "elpd_diff_se"), relative=0.05),
        Tolerance(("median_effective_draws",), relative=0.3),
        Tolerance(("n_not_converged",), absolute=1),
    ),
    keys=("model",),
    otherwise=FLOATING_POINT,
)
#: Power and rejection rates: binomial shares of the replicates, with their MCSE columns.
POWER = TableRule(
    tolerances=(
        Tolerance(
            ("power", "ci_low", "ci_high"),
            column_or_one_trial("mcse", "n_reps"),
            "MCSE of the power",
        ),
        Tolerance(
            ("power_all", "ci_low_all", "ci_high_all"),
            column_or_one_trial("mcse_all", "n_reps"),
            "MCSE of the power",
        ),
        Tolerance(("mcse", "mcse_all"), relative=0.5, absolute=0.01),
        Tolerance(("n_failed",), count_mcse("n_failed"), "Poisson SE of a count", absolute=2),
    ),
    not_compared=("note",),
    otherwise=FLOATING_POINT,
)
TYPE_I = TableRule(
    tolerances=(
        Tolerance(
            ("rejection_rate", "ci_low", "ci_high"),
            column_or_one_trial("mcse", "n_reps"),
            "MCSE of the rejection rate",
        ),
        Tolerance(("mcse",), relative=0.5, absolute=0.01),
        Tolerance(("n_failed",), count_mcse("n_failed"), "Poisson SE of a count", absolute=2),
    ),
    not_compared=("note",),
    otherwise=FLOATING_POINT,
)
PERFORMANCE = TableRule(
    tolerances=(
        Tolerance(("mean_estimate", "bias"), column("bias_mcse"), "MCSE of the mean estimate"),
        Tolerance(("empirical_se",), column("empirical_se_mcse"), "MCSE of the empirical SE"),
        Tolerance(("model_se",), column("model_se_mcse"), "MCSE of the model SE"),
        Tolerance(
            ("coverage", "coverage_ci_low", "coverage_ci_high"),
            column_or_one_trial("coverage_mcse", "n_estimates"),
            "MCSE of the coverage",
        ),
        Tolerance(
            ("bias_mcse", "empirical_se_mcse", "model_se_mcse", "coverage_mcse"),
            relative=0.5,
            absolute=0.01,
        ),
        Tolerance(
            ("n_estimates",),
            lambda t: np.sqrt(t["n_reps"] - t["n_estimates"]),
            "Poisson SE of the failures",
            absolute=2,
        ),
    ),
    not_compared=("note",),
    otherwise=FLOATING_POINT,
)
#: The n for a target power, read off a simulated power curve: its 95% interval
#: (n_low, n_high) gives its SE; the grid neighbours around it move with it.
N_READ_OFF_THE_CURVE = Tolerance(
    ("n_required", "n_low", "n_high", "n_real", "n_below", "n_above"),
    interval_se("n_low", "n_required", "n_high"),
    "SE of n implied by its 95% interval",
)
#: The design's total sample at those n moves with them.
TOTAL_READ_OFF_THE_CURVE = Tolerance(
    ("total_required", "total_low", "total_high"),
    interval_se("total_low", "total_required", "total_high"),
    "SE of the design's total implied by its 95% interval",
)
SAMPLE_SIZE = TableRule(
    tolerances=(N_READ_OFF_THE_CURVE, TOTAL_READ_OFF_THE_CURVE),
    not_compared=("note",),
    otherwise=FLOATING_POINT,
)
SAMPLE_SIZE_VALIDATION = TableRule(
    tolerances=(
        Tolerance(
            ("coverage",), column_or_one_trial("coverage_mcse", "runs"), "MCSE of the coverage"
        ),
        Tolerance(("relative_error",), column("relative_error_mcse"), "MCSE of the mean error"),
        Tolerance(
            ("relative_error_whole",),
            column("relative_error_whole_mcse"),
            "MCSE of the mean error",
        ),
        Tolerance(
            ("coverage_mcse", "relative_error_mcse", "relative_error_whole_mcse"),
            relative=0.5,
            absolute=0.01,
        ),
        # A share of ``runs`` simulated curves: its binomial MCSE, at most 0.5/sqrt(runs).
        Tolerance(("estimable",), lambda t: 0.5 / np.sqrt(t["runs"]), "binomial MCSE"),
        # The mean of ``runs`` (2000) simulated interval widths; no MCSE column.
        Tolerance(("mean_width",), relative=0.1),
    ),
    otherwise=FLOATING_POINT,
)
#: SBC: counts of failed fits are Poisson; the rank statistics (ECDF deviation, gamma, its
#: p-value) move as a whole when the chains do, so only their verdicts (``within_95_band``,
#: ``passes``) are compared, exactly; the true values' medians move with the set of failed fits.
SBC_SUMMARY = TableRule(
    tolerances=(
        Tolerance(
            ("ranked", "failed_fits"),
            count_mcse("failed_fits"),
            "Poisson SE of a count",
            absolute=2,
        ),
        Tolerance(("contraction",), relative=0.1),
    ),
    not_compared=(
        "ecdf_max_deviation",
        "gamma",
        "p_value",
        "true_median_*",
        "failure_p_value",
    ),
    keys=("quantity",),
    otherwise=FLOATING_POINT,
)

#: How each output is compared: the first pattern that matches its path (the results folder
#: written ``results``) wins. A new Monte Carlo table needs its rule here; until then it must be
#: byte-identical.
COMPARISONS: tuple[tuple[str, Exact | TableRule | Through | Derived], ...] = (
    ("results/frequentist/*", Exact("the study's tests: exact or asymptotic, no random numbers")),
    ("results/fits/*/fit.nc", Through("netCDF: ArviZ stamps creation and sampling times")),
    ("results/fits/*/estimands.csv", POSTERIOR_SUMMARY),
    ("results/fits/loo_kappa.csv", LOO),
    ("results/crossval/kfold_compare.csv", KFOLD),
    ("results/power/*/power.csv", POWER),
    ("results/power/*/type_i_error.csv", TYPE_I),
    ("results/power/*/performance.csv", PERFORMANCE),
    ("results/power/*/sample_size*.csv", SAMPLE_SIZE),
    ("results/sbc/*/sbc_summary.csv", SBC_SUMMARY),
    ("results/sbc/*/ranks.parquet", Through("per-replicate ranks: summarised in sbc_summary")),
    ("results/sample_size_validation.csv", SAMPLE_SIZE_VALIDATION),
    ("paper/generated/*.json", Derived("gathered from the result tables by analysis/numbers.py")),
    ("*.png", Through("PNG images: not byte-stable across renderers")),
    ("*.pdf", Through("PDF: stamped with its creation date")),
    ("*", Exact("no randomness is declared for it")),
)
EXACT_TABLE = TableRule()


def comparison_for(logical_path: str) -> Exact | TableRule | Through | Derived:
    """How the output at ``logical_path`` (results folder written ``results``) is compared."""
    return next(how for pattern, how in COMPARISONS if fnmatch.fnmatchcase(logical_path, pattern))


# --- Comparing two tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The comparison of one output: ``status`` (one of ``PASSING``, DIFFERS, missing)."""

    path: str
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status in PASSING

    def line(self) -> str:
        return f"{self.path}: {self.status}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class ColumnResult:
    """One column of two tables: each row's |difference| as a share of its tolerance."""

    column: str
    excess: np.ndarray
    tolerance: np.ndarray
    label: str

    @property
    def worst(self) -> int:
        return int(np.argmax(self.excess))

    @property
    def beyond(self) -> int:
        return int((self.excess > 1).sum())


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def excess_over(a: np.ndarray, b: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """|a - b| / tolerance per row: 0 where equal (both blank included), inf where one is
    blank or a zero tolerance is exceeded."""
    equal = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(equal, 0.0, np.abs(a - b) / tolerance)
    return np.nan_to_num(excess, nan=np.inf)


def text_differs(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Per row, whether two columns differ as text (two blanks are equal)."""
    blank_a, blank_b = a.isna().to_numpy(), b.isna().to_numpy()
    differs = a.astype(object).astype(str).to_numpy() != b.astype(object).astype(str).to_numpy()
    return np.where(blank_a | blank_b, blank_a != blank_b, differs)


def compare_column(
    original: pd.DataFrame, rebuilt: pd.DataFrame, name: str, rule: TableRule
) -> ColumnResult:
    """One column of the two builds' tables, by its tolerance (numbers) or exactly (text)."""
    a, b = original[name], rebuilt[name]
    if is_number(a) and is_number(b):
        tolerance = rule.tolerance_for(name)
        limit = tolerance.per_row(original, rebuilt, name) if tolerance else np.zeros(len(a))
        label = tolerance.describe() if tolerance else "none: must be equal"
        excess = excess_over(a.to_numpy(float), b.to_numpy(float), limit)
        return ColumnResult(name, excess, limit, label)
    return ColumnResult(name, np.where(text_differs(a, b), np.inf, 0.0), np.zeros(len(a)), "text")


def row_label(table: pd.DataFrame, row: int, rule: TableRule) -> str:
    """``row 3 (estimand=pct_pos, group=HC)``: the row's keys, or its compared text cells."""
    names = list(rule.keys) or [
        c for c in table.columns if not is_number(table[c]) and rule.compares(c)
    ]
    values = (table[c].iloc[row] for c in names)
    cells = ", ".join(f"{c}={'' if pd.isna(v) else v}" for c, v in zip(names, values, strict=True))
    return f"row {row + 1}" + (f" ({cells})" if cells else "")


def shown(value: object) -> str:
    """A number to 6 significant digits, anything else as Python writes it ('ok', True)."""
    if isinstance(value, bool | np.bool_):
        return repr(bool(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return f"{value:.6g}"
    return repr(value)


def describe_difference(
    result: ColumnResult, original: pd.DataFrame, rebuilt: pd.DataFrame, rule: TableRule
) -> str:
    """Which column, which row, both values, and by how much."""
    row = result.worst
    a, b = original[result.column].iloc[row], rebuilt[result.column].iloc[row]
    where = f"column '{result.column}' ({result.beyond} of {len(original)} rows beyond tolerance)"
    values = f"{shown(a)} in the manifest's build, {shown(b)} rebuilt"
    if result.label == "text":
        return f"{where}, {row_label(original, row, rule)}: {values}"
    gap = abs(float(a) - float(b))
    limit = f"tolerance {result.tolerance[row]:.3g} ({result.label})"
    return f"{where}, {row_label(original, row, rule)}: {values}, |difference| {gap:.3g} > {limit}"


def aligned(table: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """The table's rows in the order of ``keys`` (file order without keys)."""
    if not keys or not set(keys) <= set(table.columns):
        return table
    return table.sort_values(list(keys), kind="stable", ignore_index=True)


def compare_tables(original: pd.DataFrame, rebuilt: pd.DataFrame, *, rule: TableRule) -> Verdict:
    """Two builds' tables under ``rule`` (the verdict's path is left blank)."""
    if list(original.columns) != list(rebuilt.columns):
        gone = [c for c in original.columns if c not in rebuilt.columns]
        new = [c for c in rebuilt.columns if c not in original.columns]
        detail = f"columns differ: only in the manifest's build {gone}, only rebuilt {new}"
        return Verdict("", DIFFERS, detail)
    if len(original) != len(rebuilt):
        detail = f"{len(original)} rows in the manifest's build, {len(rebuilt)} rebuilt"
        return Verdict("", DIFFERS, detail)
    original, rebuilt = aligned(original, rule.keys), aligned(rebuilt, rule.keys)
    results = [
        compare_column(original, rebuilt, name, rule)
        for name in original.columns
        if rule.compares(name)
    ]
    failing = [r for r in results if r.beyond]
    if failing:
        detail = describe_difference(failing[0], original, rebuilt, rule)
        others = ", ".join(f"'{r.column}'" for r in failing[1:])
        return Verdict(
            "", DIFFERS, detail + (f"; also beyond tolerance: {others}" if others else "")
        )
    largest = max(results, key=lambda r: r.excess.max(initial=0.0), default=None)
    if largest is None or largest.excess.max(initial=0.0) == 0:
        return Verdict("", WITHIN, "equal values, different bytes")
    share = largest.excess.max()
    detail = f"largest difference in column '{largest.column}', {share:.2g} of its tolerance"
    return Verdict("", WITHIN, detail)


def table_verdict(original: Path, rebuilt: Path, rule: TableRule) -> tuple[str, str]:
    """The status and detail of two table files compared under ``rule``."""
    try:
        tables = read_table(original), read_table(rebuilt)
    except (ValueError, OSError) as err:
        return DIFFERS, f"cannot be read as a table: {err}"
    try:
        verdict = compare_tables(*tables, rule=rule)
    except KeyError as err:
        return DIFFERS, f"a tolerance needs column {err}, which the table lacks"
    return verdict.status, verdict.detail


def first_different_line(original: bytes, rebuilt: bytes) -> str:
    """``line 3: '...' in the manifest's build, '...' rebuilt`` (text files)."""
    a, b = (
        original.decode(errors="replace").splitlines(),
        rebuilt.decode(errors="replace").splitlines(),
    )
    for number, (line_a, line_b) in enumerate(zip(a, b, strict=False), start=1):
        if line_a != line_b:
            return (
                f"line {number}: {line_a.strip()!r} in the manifest's build, "
                f"{line_b.strip()!r} rebuilt"
            )
    if len(a) == len(b):
        return "the same lines, different bytes (line endings or encoding)"
    return f"{len(a)} lines in the manifest's build, {len(b)} rebuilt"


# --- Comparing two builds -------------------------------------------------------------------


def logical_path(path: str, results: str) -> str:
    """``path`` with the build's results folder written ``results`` (as in ``COMPARISONS``)."""
    results = results.rstrip("/")
    if path == results or path.startswith(results + "/"):
        return REBUILT_RESULTS + path[len(results) :]
    return path


class BuildComparison:
    """Every output of the manifest compared between the build beside it and a rebuilt tree."""

    def __init__(self, manifest: dict, *, original: Path, rebuilt: Path) -> None:
        self.outputs: dict[str, dict] = manifest["outputs"]
        self.results = manifest["pipeline"].get("results") or REBUILT_RESULTS
        self.original, self.rebuilt = original, rebuilt
        self.original_hashes, self.rebuilt_hashes = FileHashes(original), FileHashes(rebuilt)
        self.verdicts: dict[str, Verdict] = {}

    def how(self, path: str) -> Exact | TableRule | Through | Derived:
        return comparison_for(logical_path(path, self.results))

    def rebuilt_name(self, path: str) -> str:
        return logical_path(path, self.results)

    def verdict(self, path: str) -> Verdict:
        """The verdict on one output (each computed once: others are compared through it)."""
        if path not in self.verdicts:
            self.verdicts[path] = self.judge(path)
        return self.verdicts[path]

    def judge(self, path: str) -> Verdict:
        recorded = self.outputs[path]["sha256"]
        rebuilt = self.rebuilt_hashes(self.rebuilt_name(path))
        how = self.how(path)
        if rebuilt is None:
            return Verdict(path, MISSING)
        if rebuilt == recorded:
            return Verdict(path, SAME)
        if isinstance(how, Through):
            return self.through(path, how)
        if isinstance(how, Derived):
            return self.derived(path, how)
        if self.original_hashes(path) != recorded:
            return Verdict(path, DIFFERS, NO_ORIGINAL)
        return self.against_original(path, how)

    def against_original(self, path: str, how: Exact | TableRule) -> Verdict:
        """Compare with the file beside the manifest: as a table, or its first differing line."""
        original = self.original / path
        rebuilt = self.rebuilt / self.rebuilt_name(path)
        if isinstance(how, TableRule):
            return Verdict(path, *table_verdict(original, rebuilt, how))
        if original.suffix in (".csv", ".parquet"):
            status, detail = table_verdict(original, rebuilt, EXACT_TABLE)
            detail = "equal values, different bytes" if status != DIFFERS else detail
        else:
            detail = first_different_line(original.read_bytes(), rebuilt.read_bytes())
        return Verdict(path, DIFFERS, f"deterministic ({how.why}): {detail}")

    def evidence(self, path: str, *, siblings: bool) -> list[str]:
        """The outputs ``path`` was made from (its recorded inputs) and, with ``siblings``, the
        compared outputs of the same job (same rule and command)."""
        record = self.outputs[path]
        inputs = sorted(p for p in record["inputs"] or {} if p in self.outputs)
        if not siblings or record["command"] is None:
            return inputs
        same_job = sorted(
            other
            for other, r in self.outputs.items()
            if other != path
            and (r["rule"], r["command"]) == (record["rule"], record["command"])
            and not isinstance(self.how(other), Through)
        )
        return same_job + [p for p in inputs if p not in same_job]

    def failing(self, paths: list[str]) -> list[str]:
        return [p for p in paths if not self.verdict(p).passed]

    def through(self, path: str, how: Through) -> Verdict:
        evidence = self.evidence(path, siblings=True)
        if failing := self.failing(evidence):
            return Verdict(
                path, DIFFERS, f"made with or from outputs that differ: {', '.join(failing)}"
            )
        if not evidence:
            return Verdict(path, NOT_COMPARED, f"{how.why}; nothing to compare it through")
        return Verdict(path, THROUGH, f"{', '.join(evidence)} ({how.why})")

    def derived(self, path: str, how: Derived) -> Verdict:
        evidence = self.evidence(path, siblings=False)
        if failing := self.failing(evidence):
            return Verdict(path, DIFFERS, f"built from outputs that differ: {', '.join(failing)}")
        if not evidence:
            return Verdict(path, DIFFERS, f"no recorded inputs to compare it through ({how.why})")
        moved = [p for p in evidence if self.verdict(p).status != SAME]
        if not moved:
            detail = f"its inputs are the same, so it should be too ({how.why})"
            return Verdict(path, DIFFERS, detail)
        return Verdict(path, WITHIN, f"built from outputs within tolerance: {', '.join(moved)}")

    def all(self) -> list[Verdict]:
        return [self.verdict(path) for path in sorted(self.outputs)]


def recorded_sources(manifest: dict) -> dict[str, str | None]:
    """Every input file that is not an output, and the pipeline's files, with their SHA-256."""
    sources = dict(manifest["pipeline"].get("files", {}))
    for record in manifest["outputs"].values():
        for path, digest in (record["inputs"] or {}).items():
            if path not in manifest["outputs"]:
                sources[path] = digest
    return sources


def changed_sources(manifest: dict, tree: Path) -> list[str]:
    """One line per source file in ``tree`` that differs from (or is missing beside) the
    manifest's record."""
    hashes = FileHashes(tree)
    lines = []
    for path, digest in sorted(recorded_sources(manifest).items()):
        found = hashes(path)
        if found != digest:
            what = "missing" if found is None else "changed since the manifest"
            lines.append(f"{path}: source {what}")
    return lines


@dataclass(frozen=True)
class Report:
    """What ``cd49d verify`` found: source files that differ and one verdict per output."""

    sources: list[str]
    verdicts: list[Verdict]

    @property
    def passed(self) -> bool:
        return not self.sources and all(v.passed for v in self.verdicts)

    def lines(self) -> list[str]:
        counts = {
            s: sum(v.status == s for v in self.verdicts) for s in (*PASSING, DIFFERS, MISSING)
        }
        summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        lines = [*self.sources, *(v.line() for v in self.verdicts)]
        if self.sources:
            count = len(self.sources)
            lines.append(f"verify: {count} source file(s) differ from the manifest's record")
        lines.append(f"verify: {len(self.verdicts)} outputs: {summary or 'none compared'}")
        lines.append("verify: " + ("passed" if self.passed else "FAILED"))
        return lines


def compare_builds(manifest: dict, *, original: Path, rebuilt: Path) -> Report:
    """The rebuilt tree ``rebuilt`` against the build ``original`` the manifest describes."""
    comparison = BuildComparison(manifest, original=original, rebuilt=rebuilt)
    return Report(changed_sources(manifest, rebuilt), comparison.all())


# --- Rebuilding ---------------------------------------------------------------------------------


def source_files(root: Path, manifest: dict) -> list[str]:
    """The files git lists in ``root`` (tracked, and untracked ones it does not ignore), less
    the build products."""
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    products = set(manifest["outputs"]) | {MANIFEST_PATH}
    return [
        path
        for path in listing.split("\0")
        if path and path not in products and not path.startswith(BUILD_FOLDERS)
    ]


def copy_sources(root: Path, tree: Path, files: list[str]) -> None:
    for path in files:
        source = root / path
        if source.is_file():  # a tracked file deleted from the work tree is left out
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / path)


def rebuild(manifest: dict, *, root: Path, folder: Path, cores: int) -> Path:
    """Copy the sources of ``root`` to ``folder/tree`` and run the pipeline there.

    Raises
    ------
    VerifyError
        If git cannot list the sources or snakemake fails (its log is in ``folder``).
    """
    tree, log = folder / "tree", folder / "snakemake.log"
    try:
        copy_sources(root, tree, source_files(root, manifest))
    except (OSError, subprocess.CalledProcessError) as err:
        raise VerifyError(f"cannot list the sources of {root} with git: {err}") from err
    config = {**manifest["pipeline"]["config"], "results": REBUILT_RESULTS}
    (folder / "config.json").write_text(canonical_json(config), encoding="utf-8")
    # The rules call `cd49d` and `python`: this environment's, importing the copied code.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {**os.environ, "PATH": path, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    with log.open("w", encoding="utf-8") as handle:
        result = subprocess.run(
            [*command, "--configfile", str(folder / "config.json")],
            cwd=tree,
            env=environment,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-10:])
        raise VerifyError(
            f"the rebuild failed (snakemake exit {result.returncode}); see {log}:\n{tail}"
        )
    return tree


def read_manifest(path: Path) -> dict:
    """The manifest at ``path``.

    Raises
    ------
    VerifyError
        If it is missing or not a manifest.
    """
    try:
        manifest = load_manifest(path)
    except (OSError, ValueError) as err:
        raise VerifyError(f"{path}: no readable manifest ({err}); `make paper` writes it") from err
    if not isinstance(manifest, dict) or not {"outputs", "pipeline"} <= set(manifest):
        raise VerifyError(f"{path}: not a manifest (no 'outputs' and 'pipeline')")
    return manifest


def verify(
    manifest_path: Path,
    *,
    rebuilt: Path | None = None,
    cores: int | None = None,
    keep: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Rebuild the pipeline (or take ``rebuilt``) and compare it with the manifest.

    The build the manifest describes is the tree above its ``paper/`` folder.

    Raises
    ------
    VerifyError
        If the manifest cannot be read or the rebuild fails.
    """
    manifest = read_manifest(manifest_path)
    root = manifest_path.resolve().parent.parent
    if rebuilt is not None:
        return compare_builds(manifest, original=root, rebuilt=rebuilt)
    if changed := changed_sources(manifest, root):
        return Report(changed, [])
    folder = Path(tempfile.mkdtemp(prefix="cd49d-verify-"))
    cores = cores or manifest["pipeline"].get("cores") or 1
    where = f"{folder / 'tree'} on {cores} core{'s' * (cores != 1)}"
    progress(f"Rebuilding in {where} (log: {folder / 'snakemake.log'})")
    tree = rebuild(manifest, root=root, folder=folder, cores=cores)  # kept when it fails
    try:
        return compare_builds(manifest, original=root, rebuilt=tree)
    finally:
        if keep:
            progress(f"Kept the rebuild in {tree}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
