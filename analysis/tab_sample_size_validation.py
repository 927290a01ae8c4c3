"""Table: the simulation study of the sample-size method (``simulations.sample_size_validation``).

Writes one row per scenario (plan grid, closed-form power curve, position, target) with the
interval's coverage of the true n, the point estimate's mean relative error, and their Monte
Carlo SEs (columns: ``RESULT_COLUMNS`` of that module, documented in README.md), then prints
the verdict. Nothing is fitted: the counts are binomial draws from known power curves.

Usage: ``python -m analysis.tab_sample_size_validation OUTPUT [--runs 2000] [--replicates M]``
"""

from __future__ import annotations

from pathlib import Path

import click

from simulations.atomic import write_atomically
from simulations.sample_size_validation import (
    CURVES,
    SMALL_REPLICATES,
    validation_study,
    verdict,
)


@click.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--runs",
    type=click.IntRange(min=2),
    default=2000,
    show_default=True,
    help="simulated grids per scenario",
)
@click.option("--seed", type=int, default=20161, show_default=True, help="root seed")
@click.option(
    "--curves",
    type=click.Choice(CURVES),
    multiple=True,
    help="curve families (repeatable; default all)",
)
@click.option(
    "--replicates",
    type=click.IntRange(min=2),
    multiple=True,
    help="also validate at M trials per cell, besides each plan's own count (repeatable; "
    f"default {', '.join(map(str, SMALL_REPLICATES))}; the pipeline passes its reduced scale's)",
)
def main(
    output: Path, runs: int, seed: int, curves: tuple[str, ...], replicates: tuple[int, ...]
) -> None:
    """Run the sample-size validation study and write its table to OUTPUT (CSV)."""
    small = replicates or SMALL_REPLICATES
    results = validation_study(runs, seed=seed, curves=curves or CURVES, small=small)
    write_atomically(results.to_csv(index=False), output)
    click.echo(verdict(results))


if __name__ == "__main__":
    main()
