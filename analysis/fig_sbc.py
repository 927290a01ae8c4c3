"""Figure: SBC rank-ECDF difference plots, one panel per quantity.

Reads the ranks (``ranks.parquet``) and the summary (``sbc_summary.csv``) written by
``cd49d sbc``; it never fits. Each panel shows the ECDF of the randomised PIT values of the
ranks minus the uniform CDF, with the simultaneous 95% band of Sailynoja, Burkner & Vehtari
(2022) (ArviZ's ``arviz_stats.ecdf_utils.ecdf_pit``, by simulation). A quantity whose
p-value is below the Bonferroni level of the whole figure is drawn in red; its title gives the
median contraction (near 1: identified by the design; near 0: the prior alone).

Usage: ``python -m analysis.fig_sbc RANKS_PARQUET SUMMARY_CSV OUTPUT``
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from arviz_stats.ecdf_utils import ecdf_pit

from analysis.style import DPI, FIGURE_WIDTH_IN
from simulations.sbc_summary import BAND_PROB, randomised_pit

N_COLS = 6
PANEL_HEIGHT_IN = 1.25
BAND_SIMULATIONS = 1000
PASS_COLOUR, FAIL_COLOUR, BAND_COLOUR = "#4C72B0", "#C44E52", "#DDDDDD"


def make(ranks_path: Path, summary_path: Path, output: Path) -> None:
    """Write the rank-ECDF difference plots of an SBC run to ``output`` (PNG or PDF)."""
    ranks = pd.read_parquet(ranks_path)
    summary = pd.read_csv(summary_path)
    ranks = ranks[ranks["status"] == "ok"]
    n_rows = math.ceil(len(summary) / N_COLS)
    fig, axes = plt.subplots(
        n_rows,
        N_COLS,
        figsize=(FIGURE_WIDTH_IN * 1.5, PANEL_HEIGHT_IN * n_rows + 0.6),
        sharex=True,
        squeeze=False,
    )
    for ax, row in zip(axes.flat, summary.itertuples(), strict=False):
        group = ranks[ranks["quantity"] == row.quantity]
        draw_panel(ax, group, row)
    for ax in axes.flat[len(summary) :]:
        ax.set_visible(False)
    failed = int(summary["failed_fits"].max()) if len(summary) else 0
    total = int(summary["replicates"].max()) if len(summary) else 0
    fig.suptitle(
        f"SBC rank ECDF - uniform, simultaneous {BAND_PROB:.0%} bands (grey); red: fails at "
        f"the family-wise level; {failed} of {total} fits failed the gate and are not ranked",
        fontsize=8,
    )
    fig.supxlabel("fractional rank of the true value", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=DPI)
    plt.close(fig)


def draw_panel(ax, group: pd.DataFrame, row) -> None:
    """One quantity: ECDF difference and its simultaneous band."""
    values = randomised_pit(group["rank"].to_numpy(), int(row.max_rank), seed=len(group))
    points, ecdf, low, high = ecdf_pit(
        values, BAND_PROB, BAND_SIMULATIONS, rng=np.random.default_rng(len(values))
    )
    colour = PASS_COLOUR if row.passes else FAIL_COLOUR
    ax.fill_between(points, low - points, high - points, color=BAND_COLOUR, step="post", lw=0)
    ax.step(points, ecdf - points, where="post", color=colour, lw=0.9)
    ax.axhline(0, color="#888888", lw=0.5)
    contraction = "" if np.isnan(row.contraction) else f", c={row.contraction:.2f}"
    ax.set_title(f"{row.quantity}{contraction}", fontsize=6, color=colour)
    ax.tick_params(labelsize=5)


@click.command()
@click.argument("ranks_path", type=click.Path(exists=True, path_type=Path))
@click.argument("summary_path", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
def main(ranks_path: Path, summary_path: Path, output: Path) -> None:
    """Draw SBC rank-ECDF difference plots from RANKS_PARQUET and SUMMARY_CSV to OUTPUT."""
    make(ranks_path, summary_path, output)


if __name__ == "__main__":
    main()
