"""Figure 1 (data and estimates): % CD49d+ per subset by group, one point per subject, with
the posterior population means and their 95% intervals beside them.

Points: each subject's observed % CD49d+ of the subset gate (the cohort file). Beside each
group: the fitted model's population-average positive rate (``pct_pos`` of ``estimands.csv``)
with its 95% equal-tailed posterior interval. Reads files only; never fits.

Usage: ``python -m analysis.fig_data_estimates COHORT_CSV ESTIMANDS_CSV OUTPUT_STEM``
"""

from __future__ import annotations

from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.style import DOUBLE_COLUMN_IN, GROUP_COLOURS, save_figure
from models.schema import GROUPS

JITTER = 0.12
ESTIMATE_OFFSET = 0.3


def observed_percentages(cohort_csv: Path) -> pd.DataFrame:
    """Each subject's % CD49d+ per subset (from the counts where given)."""
    rows = pd.read_csv(cohort_csv)
    from_counts = 100 * rows["n_cd49d_pos"] / rows["n_cells"]
    rows["pct"] = from_counts.where(rows["n_cells"].notna(), rows["pct_cd49d_pos"])
    return rows[["subject_id", "group", "subset", "pct"]]


def population_rates(estimands_csv: Path) -> pd.DataFrame:
    """The model's population-average % CD49d+ per group and subset, with its interval."""
    table = pd.read_csv(estimands_csv)
    return table[table["estimand"] == "pct_pos"].set_index(["group", "subset"])


def draw_subset(ax, observed: pd.DataFrame, rates: pd.DataFrame, rng) -> None:
    """One subset's panel: subjects as points, the posterior mean and interval beside."""
    groups = [g for g in GROUPS if g in set(observed["group"])]
    for x, group in enumerate(groups):
        values = observed.loc[observed["group"] == group, "pct"].to_numpy()
        colour = GROUP_COLOURS[group]
        ax.scatter(
            x + rng.uniform(-JITTER, JITTER, len(values)),
            values,
            s=6,
            color=colour,
            alpha=0.7,
            linewidths=0,
        )
        if (group, observed["subset"].iloc[0]) in rates.index:
            cell = rates.loc[(group, observed["subset"].iloc[0])]
            ax.errorbar(
                x + ESTIMATE_OFFSET,
                cell["mean"],
                yerr=[[cell["mean"] - cell["q2.5"]], [cell["q97.5"] - cell["mean"]]],
                fmt="D",
                markersize=3,
                color=colour,
                markeredgecolor="black",
                markeredgewidth=0.4,
                elinewidth=1,
                capsize=0,
            )
    ax.set_xticks(range(len(groups)), groups, fontsize=6, rotation=30)
    ax.tick_params(axis="y", labelsize=6)


def make(cohort_csv: Path, estimands_csv: Path, stem: Path, seed: int = 1) -> list[Path]:
    """Draw the figure; ``seed`` fixes the points' horizontal jitter."""
    observed = observed_percentages(cohort_csv)
    rates = population_rates(estimands_csv)
    subsets = list(dict.fromkeys(observed["subset"]))
    fig, axes = plt.subplots(
        1, len(subsets), figsize=(DOUBLE_COLUMN_IN, 2.6), squeeze=False, layout="constrained"
    )
    rng = np.random.default_rng(seed)
    for ax, subset in zip(axes[0], subsets, strict=True):
        draw_subset(ax, observed[observed["subset"] == subset], rates, rng)
        ax.set_title(subset, fontsize=8)
    axes[0, 0].set_ylabel("% CD49d+ of the subset gate", fontsize=7)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cohort", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("estimands", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(cohort: Path, estimands: Path, stem: Path) -> None:
    """Draw each subject's % CD49d+ and the model's population rates into STEM.pdf/.png."""
    make(cohort, estimands, stem)


if __name__ == "__main__":
    main()
