"""Make ``tests/data/results/``, the small result tree the figure, table and manuscript tests read.

Copies the small tables of a complete pipeline run (``make reproduce``) and thins every
``fit.nc`` to 2 chains x 50 draws (without its pointwise log-likelihood and log-prior), so that
the fixture stays small. The numbers are those of a run on the bundled SIMULATED cohort at the
pipeline's reduced scale: tests read their shape and values back, never take them as findings.

Usage: ``python tests/data/make_results_fixture.py RESULTS_DIR [--only fits|tables]``
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import xarray as xr

FIXTURE = Path(__file__).parent / "results"
#: Tables copied as they are, by pattern under the results folder.
TABLES = [
    "frequentist/frequentist.csv",
    "fits/*/estimands.csv",
    "fits/*/identification.csv",
    "fits/*/prior_sensitivity.csv",
    "fits/*/predictive_checks.csv",
    "fits/*/ppc_new_subjects.csv",
    "fits/loo_kappa.csv",
    "crossval/kfold_compare.csv",
    "power/*/power.csv",
    "power/*/type_i_error.csv",
    "power/*/performance.csv",
    "power/*/sample_size.csv",
    "power/*/sample_size_sensitivity.csv",
    "sbc/*/sbc_summary.csv",
    "sbc/*/ranks.parquet",
    "sample_size_validation.csv",
]
CHAINS, DRAWS = 2, 50
#: Groups of fit.nc that no figure or table reads: left out of the fixture.
DROPPED_GROUPS = {"log_likelihood", "log_prior"}


def thin_fit(source: Path, target: Path) -> None:
    """The fit's data tree with its first ``CHAINS`` chains and ``DRAWS`` evenly spaced draws."""
    tree = xr.open_datatree(source)
    thinned = {}
    for name, node in tree.children.items():
        if name in DROPPED_GROUPS:
            continue
        ds = node.to_dataset()
        if "chain" in ds.dims:
            ds = ds.isel(chain=slice(0, CHAINS))
        if "draw" in ds.dims:
            step = max(1, ds.sizes["draw"] // DRAWS)
            ds = ds.isel(draw=slice(0, step * DRAWS, step))
        thinned[name] = ds
    out = xr.DataTree.from_dict(thinned)
    out.attrs = dict(tree.attrs)
    target.parent.mkdir(parents=True, exist_ok=True)
    compressed = {"zlib": True, "complevel": 9}
    encoding = {f"/{name}": {v: compressed for v in ds.data_vars} for name, ds in thinned.items()}
    out.to_netcdf(target, encoding=encoding)


def copy_tables(results: Path) -> None:
    for pattern in TABLES:
        for source in sorted(results.glob(pattern)):
            target = FIXTURE / source.relative_to(results)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--only", type=click.Choice(["fits", "tables"]), default=None)
def main(results: Path, only: str | None) -> None:
    """Refresh tests/data/results/ from the complete run in RESULTS."""
    if only != "tables":
        for fit in sorted(results.glob("fits/*/fit.nc")):
            thin_fit(fit, FIXTURE / fit.relative_to(results))
    if only != "fits":
        copy_tables(results)


if __name__ == "__main__":
    main()
