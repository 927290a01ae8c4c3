"""What median fluorescence adds to positive rates: one SIMULATED cohort of the study's design,
fitted with and without its MFI columns (``mfi_comparison.csv``).

- **Aim**: how far an MFI reading per sample x subset narrows the spread of log CD49d within
  each gate (``sigma`` per subset) and ``kappa_difference`` (Treg's kappa minus an effector's),
  which positive rates alone identify only by assuming one sigma for all subsets.
- **Data**: the bundled cohort configuration (``simulations/configs/kimura2016_cohort.toml``:
  the study's design, one kappa of 0.71 for all subsets, sigma 1.5 in every subset) with an MFI
  reading per row (gate value ``DEFAULT_MFI_GATE``, log-scale measurement SD 0.1, Vogt et al.
  1991), one cohort drawn from the joint model's own graph (``simulate_cohort``), seed ``SEED``.
- **Estimands**: ``sigma`` per subset and ``kappa_difference`` per effector subset; their
  true values are 1.5 and 0.
- **Methods**: the per-subset-kappa model (``saturation_per_subset``) fitted three ways
  (``VARIANTS``): rates and MFI (then sigma is per subset), rates alone with sigma per subset
  (prior set ``per_subset_sigma``), rates alone with one sigma (the default).
- **Measures**: prior and posterior SD, contraction ``1 - var_post / var_prior`` (the
  identification measure of ``identification.csv``), posterior mean and 95% interval beside the
  truth. One cohort, so no Monte Carlo error is given: contraction is a property of what the
  design measures, and the truth is shown only to make a wrong posterior visible.

No number here describes the study's patients.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from models.data import Cohort
from models.estimands import CI_PROB
from models.fit import FitResult, SamplerSettings, fit_gated
from models.registry import MODELS
from models.schema import MFI_COLUMNS
from simulations.atomic import write_atomically
from simulations.cohort import (
    cohort_csv_text,
    load_config,
    simulate_cohort,
    with_mfi,
)

#: Root seed of the comparison: the cohort's draw, then each fit's (``SeedSequence`` children).
SEED = 20161125
MODEL = "saturation_per_subset"
PRIOR_DRAWS = 4000


@dataclass(frozen=True)
class Variant:
    """One way of fitting the cohort."""

    measurements: str  # "rates+mfi" or "rates"
    sigma: str  # how the fitted model treats the spread
    prior_set: str


VARIANTS = (
    Variant("rates+mfi", "per subset (identified by the MFI)", "default"),
    Variant("rates", "per subset", "per_subset_sigma"),
    Variant("rates", "one for all subsets (assumption)", "default"),
)
COLUMNS = [
    "measurements",
    "sigma_model",
    "quantity",
    "subset",
    "truth",
    "prior_sd",
    "posterior_mean",
    "posterior_sd",
    "q2.5",
    "q97.5",
    "contraction",
    "status",
]


def comparison_cohort(seed: int = SEED) -> Cohort:
    """The SIMULATED study-design cohort with an MFI reading on every row."""
    config = with_mfi(load_config())
    frame = simulate_cohort(config, seed=seed)
    return Cohort.from_frame(frame, config.spec, source=f"simulated with MFI (seed {seed})")


def without_mfi(cohort: Cohort) -> Cohort:
    """The same rows without their MFI columns."""
    frame = cohort.rows.drop(columns=[*MFI_COLUMNS, "has_counts", "positive_rate"])
    return Cohort.from_frame(frame, cohort.spec, source=f"{cohort.source}, MFI removed")


def truths(cohort: Cohort) -> dict[str, float]:
    """The generating values: the configuration's sigma and, with one kappa, a difference 0."""
    parameters = load_config().parameters
    kappa = np.atleast_1d(parameters["kappa"])
    return {"sigma": float(parameters["sigma"]), "kappa_difference": float(np.ptp(kappa))}


def quantity_draws(dataset: xr.Dataset, cohort: Cohort) -> dict[str, xr.DataArray]:
    """``sigma`` (per subset, or one) and ``kappa_difference`` (reference minus each effector)."""
    reference, effectors = cohort.spec.reference_subset, list(cohort.spec.effector_subsets)
    kappa = dataset["kappa"]
    return {
        "sigma": dataset["sigma"],
        "kappa_difference": kappa.sel(subset=reference) - kappa.sel(subset=effectors),
    }


def summary_rows(
    variant: Variant,
    cohort: Cohort,
    prior: xr.Dataset,
    fit: FitResult,
) -> list[dict]:
    """One row per quantity element: prior SD, posterior summary and contraction."""
    base = {"measurements": variant.measurements, "sigma_model": variant.sigma}
    truth = truths(cohort)
    if not fit.passed:
        return [{**base, "status": f"not_converged: {fit.report.describe()}"}]
    posterior = quantity_draws(fit.idata["posterior"].to_dataset(), cohort)
    rows = []
    for name, prior_draws in quantity_draws(prior, cohort).items():
        prior_flat = prior_draws.stack(sample=("chain", "draw"))
        posterior_flat = posterior[name].stack(sample=("chain", "draw"))
        subsets = list(prior_flat["subset"].values) if "subset" in prior_flat.dims else [""]
        for subset in subsets:
            select = {"subset": subset} if subset else {}
            p = prior_flat.sel(select).values
            q = posterior_flat.sel(select).values
            tail = (1 - CI_PROB) / 2
            rows.append(
                {
                    **base,
                    "quantity": name,
                    "subset": subset or "all",
                    "truth": truth[name],
                    "prior_sd": float(p.std(ddof=1)),
                    "posterior_mean": float(q.mean()),
                    "posterior_sd": float(q.std(ddof=1)),
                    "q2.5": float(np.quantile(q, tail)),
                    "q97.5": float(np.quantile(q, 1 - tail)),
                    "contraction": float(1 - q.var(ddof=1) / p.var(ddof=1)),
                    "status": "ok",
                }
            )
    return rows


def compare(
    cohort: Cohort,
    *,
    seed: int = SEED,
    settings: SamplerSettings | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
) -> pd.DataFrame:
    """Fit ``cohort`` (which has MFI) in each of ``variants`` (default every ``VARIANTS`` way;
    the k-th variant's seeds are the k-th child of ``SeedSequence(seed)``, whichever are fitted);
    the ``COLUMNS`` table."""
    rows = []
    children = dict(zip(VARIANTS, np.random.SeedSequence(seed).spawn(len(VARIANTS)), strict=True))
    for variant in variants:
        child = children[variant]
        data = cohort if variant.measurements == "rates+mfi" else without_mfi(cohort)
        build = partial(MODELS[MODEL].build, data, variant.prior_set)
        fit_seed, prior_seed = (int(s) for s in child.generate_state(2))
        with build():
            prior = pm.sample_prior_predictive(
                draws=PRIOR_DRAWS, var_names=["sigma", "kappa"], random_seed=prior_seed
            ).prior
        fit = fit_gated(build, settings, seed=fit_seed, with_checks=False)
        rows += summary_rows(variant, data, prior, fit)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.mfi_comparison",
        description="Fit one SIMULATED cohort of the study's design with and without its MFI "
        "columns; write the posterior and prior SDs of sigma per subset and kappa_difference.",
    )
    parser.add_argument("out", type=Path, help="output folder (mfi_comparison.csv, cohort_mfi.csv)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"root seed (default {SEED})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cohort = comparison_cohort(args.seed)
    table = compare(cohort, seed=args.seed)
    file_rows = cohort.rows.drop(columns=["has_counts", "positive_rate"])
    write_atomically(cohort_csv_text(file_rows), args.out / "cohort_mfi.csv")
    text = table.to_csv(index=False, lineterminator="\n")
    write_atomically(text, args.out / "mfi_comparison.csv")
    print(summary_text(table))


def summary_text(table: pd.DataFrame) -> str:
    """Posterior SD (contraction) per quantity and fit: one line each."""
    lines = ["posterior SD (contraction) of a SIMULATED cohort of the study's design:"]
    for row in table.itertuples():
        if row.status != "ok":
            lines.append(f"  {row.measurements:<10} sigma {row.sigma_model}: {row.status}")
            continue
        lines.append(
            f"  {row.measurements:<10} sigma {row.sigma_model:<36} {row.quantity:<17} "
            f"{row.subset:<5} {row.posterior_sd:.3f} ({row.contraction:+.2f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
