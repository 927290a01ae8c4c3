"""MCMC diagnostics as a gate: a fit passes all thresholds or it is not used.

Thresholds (configurable): R-hat <= 1.01 (rank-normalised split R-hat, Vehtari et al. 2021),
bulk and tail ESS >= 400, no divergent transitions, E-BFMI >= 0.3 in every chain.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr


@dataclass(frozen=True)
class Thresholds:
    """Limits a fit must meet."""

    rhat_max: float = 1.01
    ess_bulk_min: float = 400.0
    ess_tail_min: float = 400.0
    divergences_max: int = 0
    ebfmi_min: float = 0.3


@dataclass(frozen=True)
class DiagnosticReport:
    """The outcome of the gate: ``passed``, one line per failure, and the per-parameter table."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def describe(self) -> str:
        return "passed" if self.passed else "; ".join(self.failures)


def parameter_table(posterior: xr.Dataset) -> pd.DataFrame:
    """R-hat, bulk ESS and tail ESS for every scalar element of every posterior variable."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant elements: NaN, reported as such
        rhat = az.rhat(posterior)
        ess_bulk = az.ess(posterior, method="bulk")
        ess_tail = az.ess(posterior, method="tail")
    rows = []
    for name in posterior.data_vars:
        flat = {
            "rhat": np.ravel(rhat[name].values),
            "ess_bulk": np.ravel(ess_bulk[name].values),
            "ess_tail": np.ravel(ess_tail[name].values),
        }
        labels = element_labels(posterior[name])
        rows += [
            {"parameter": label, **{k: float(v[i]) for k, v in flat.items()}}
            for i, label in enumerate(labels)
        ]
    return pd.DataFrame(rows, columns=["parameter", "rhat", "ess_bulk", "ess_tail"])


def element_labels(variable: xr.DataArray) -> list[str]:
    """``name[coord, coord]`` labels in C order for a variable's non-sample dims."""
    dims = [d for d in variable.dims if d not in ("chain", "draw")]
    if not dims:
        return [str(variable.name)]
    index = pd.MultiIndex.from_product([variable[d].values for d in dims])
    return [f"{variable.name}[{', '.join(map(str, key))}]" for key in index]


def check(
    idata: xr.DataTree, thresholds: Thresholds | None = None, *, var_names: list[str] | None = None
) -> DiagnosticReport:
    """Apply the gate to a fit.

    Parameters
    ----------
    idata
        The fit: ``posterior`` and ``sample_stats`` (``diverging``, ``energy``) groups.
    thresholds
        Limits; default ``Thresholds()``.
    var_names
        Posterior variables to check; default all.

    Returns
    -------
    DiagnosticReport
        ``failures`` names each failing diagnostic with the worst parameters.
    """
    thresholds = thresholds or Thresholds()
    posterior = idata["posterior"].to_dataset()
    if var_names is not None:
        posterior = posterior[var_names]
    # A quantity fixed by design (a constant deterministic) has no R-hat or ESS to check.
    posterior = posterior[[v for v in posterior.data_vars if not is_constant(posterior[v])]]
    table = parameter_table(posterior)
    failures = []
    failures += limit_failures(table, "rhat", thresholds.rhat_max, above=True, label="R-hat")
    failures += limit_failures(
        table, "ess_bulk", thresholds.ess_bulk_min, above=False, label="bulk ESS"
    )
    failures += limit_failures(
        table, "ess_tail", thresholds.ess_tail_min, above=False, label="tail ESS"
    )
    stats = idata["sample_stats"].to_dataset()
    divergences = int(stats["diverging"].sum())
    if divergences > thresholds.divergences_max:
        failures.append(
            f"{divergences} divergent transitions (allowed {thresholds.divergences_max})"
        )
    ebfmi = np.atleast_1d(az.bfmi(idata)["energy"].values if "energy" in stats else [np.inf])
    if np.min(ebfmi) < thresholds.ebfmi_min:
        failures.append(f"E-BFMI {np.min(ebfmi):.2f} < {thresholds.ebfmi_min} in some chain")
    return DiagnosticReport(passed=not failures, failures=failures, table=table)


def is_constant(variable: xr.DataArray) -> bool:
    """Constant up to rounding (a deterministic fixed by the prior set, say)."""
    values = np.asarray(variable.values, dtype=float)
    return bool(np.all(np.abs(values - values.flat[0]) <= 1e-12 * (1 + abs(values.flat[0]))))


def limit_failures(
    table: pd.DataFrame, column: str, limit: float, *, above: bool, label: str
) -> list[str]:
    """One line naming how many parameters break a limit and the worst three."""
    values = table[column].fillna(np.inf if above else -np.inf)
    bad = table[values > limit] if above else table[values < limit]
    if bad.empty:
        return []
    worst = bad.sort_values(column, ascending=not above).head(3)
    names = ", ".join(f"{r.parameter} ({getattr(r, column):.3g})" for r in worst.itertuples())
    relation = ">" if above else "<"
    return [f"{label} {relation} {limit:g} for {len(bad)} parameter(s): {names}"]
