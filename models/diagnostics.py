"""MCMC diagnostics as a gate: a fit passes all thresholds or it is not used.

Thresholds (configurable): R-hat <= 1.01 (rank-normalised split R-hat, Vehtari et al. 2021),
bulk and tail ESS >= 400 (tail: the 5% and 95% quantiles), no divergent transitions, E-BFMI
>= 0.3 in every chain. ``gate`` applies them to per-quantity statistics, however computed:
``check`` takes them from ArviZ for one fit, ``models.batch`` from ``models.chain_stats`` (the
same algorithms, vectorised) for a batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from models.chain_stats import TAIL_PROBS


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
        # Passed explicitly: ArviZ 1 would take its 0.89 interval default (quantiles 5.5% and
        # 94.5%), not the 5% and 95% of Vehtari et al. (2021).
        ess_tail = az.ess(posterior, method="tail", prob=TAIL_PROBS)
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
    posterior = idata["posterior"].to_dataset()
    if var_names is not None:
        posterior = posterior[var_names]
    # A quantity fixed by design (a constant deterministic) has no R-hat or ESS to check.
    posterior = posterior[[v for v in posterior.data_vars if not is_constant(posterior[v])]]
    table = parameter_table(posterior)
    stats = idata["sample_stats"].to_dataset()
    ebfmi = np.atleast_1d(az.bfmi(idata)["energy"].values if "energy" in stats else [np.inf])
    return gate(
        table["parameter"].tolist(),
        rhat=table["rhat"].to_numpy(),
        ess_bulk=table["ess_bulk"].to_numpy(),
        ess_tail=table["ess_tail"].to_numpy(),
        constant=np.zeros(len(table), dtype=bool),
        divergences=int(stats["diverging"].sum()),
        ebfmi=ebfmi,
        thresholds=thresholds,
    )


def gate(
    labels: list[str],
    *,
    rhat: np.ndarray,
    ess_bulk: np.ndarray,
    ess_tail: np.ndarray,
    constant: np.ndarray,
    divergences: int,
    ebfmi: np.ndarray,
    thresholds: Thresholds | None = None,
) -> DiagnosticReport:
    """The gate on per-quantity diagnostics: the one rule for every fit, single or batched.

    Parameters
    ----------
    labels
        One label per quantity (``name[coord, ...]``).
    rhat, ess_bulk, ess_tail
        Rank-normalised split R-hat, bulk and tail ESS per quantity (NaN fails).
    constant
        Quantities fixed by design (a constant deterministic): left out.
    divergences
        Divergent transitions after warmup, all chains.
    ebfmi
        E-BFMI per chain.
    thresholds
        Limits; default ``Thresholds()``.
    """
    thresholds = thresholds or Thresholds()
    keep = ~np.asarray(constant, dtype=bool)
    rhat, ess_bulk, ess_tail = (
        np.asarray(a, dtype=float)[keep] for a in (rhat, ess_bulk, ess_tail)
    )
    ebfmi = np.atleast_1d(np.asarray(ebfmi, dtype=float))
    passed = (
        bool(np.all(np.nan_to_num(rhat, nan=np.inf) <= thresholds.rhat_max))
        and bool(np.all(np.nan_to_num(ess_bulk, nan=-np.inf) >= thresholds.ess_bulk_min))
        and bool(np.all(np.nan_to_num(ess_tail, nan=-np.inf) >= thresholds.ess_tail_min))
        and divergences <= thresholds.divergences_max
        and bool(np.min(ebfmi) >= thresholds.ebfmi_min)
    )
    table = pd.DataFrame(
        {
            "parameter": np.asarray(labels, dtype=object)[keep],
            "rhat": rhat,
            "ess_bulk": ess_bulk,
            "ess_tail": ess_tail,
        }
    )
    if passed:
        return DiagnosticReport(passed=True, failures=[], table=table)
    failures = []
    failures += limit_failures(table, "rhat", thresholds.rhat_max, above=True, label="R-hat")
    failures += limit_failures(
        table, "ess_bulk", thresholds.ess_bulk_min, above=False, label="bulk ESS"
    )
    failures += limit_failures(
        table, "ess_tail", thresholds.ess_tail_min, above=False, label="tail ESS"
    )
    if divergences > thresholds.divergences_max:
        failures.append(
            f"{divergences} divergent transitions (allowed {thresholds.divergences_max})"
        )
    if np.min(ebfmi) < thresholds.ebfmi_min:
        failures.append(f"E-BFMI {np.min(ebfmi):.2f} < {thresholds.ebfmi_min} in some chain")
    return DiagnosticReport(passed=False, failures=failures, table=table)


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
