"""Figure S6 (posterior predictive check for new subjects): per group and subset, the median and
the interquartile range of the % CD49d+ across subjects, replicated for new subjects drawn from
each fitted model's population, against the cohort's observed values.

Each model's ``ppc_new_subjects.csv`` (written by ``cd49d fit``; ``analysis.predictive_checks``)
gives, per group x subset x statistic, the quantiles of the statistic over the posterior draws
(each draw: new subject effects and, for treated patients in the latent-expression models, new
occupancies, then binomial counts at each real row's ``n_cells``) and the observed value. Drawn:
the central 50% (thick) and 90% (thin) intervals of the replicated statistic and its median
(one marker shape per model), and the observed value (black bar). Reads files only; never fits.

Usage: ``python -m analysis.fig_ppc_new_subjects CHECK_CSV [CHECK_CSV ...] OUTPUT_STEM``
"""

from __future__ import annotations

from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import patheffects
from matplotlib.lines import Line2D

from analysis.style import DOUBLE_COLUMN_IN, GROUP_COLOURS, OBSERVED_COLOUR, save_figure
from models.schema import GROUPS

#: Row of panels per statistic, with its axis label.
STATISTIC_LABELS = {
    "median": "median % CD49d+\nacross subjects",
    "iqr": "IQR of % CD49d+ across\nsubjects (percentage points)",
}
MODEL_MARKERS = ("o", "s", "^", "D", "v")
#: A white edge keeps the observed bar visible across intervals of the same dark colour (NMOSD).
OBSERVED_HALO = [patheffects.Stroke(linewidth=2.6, foreground="white"), patheffects.Normal()]
#: Horizontal room each group's models share, in units of the distance between groups.
CLUSTER_WIDTH = 0.64


def read_checks(check_csvs: list[Path]) -> pd.DataFrame:
    """The new-subject checks of every model, in the order given."""
    return pd.concat([pd.read_csv(path) for path in check_csvs], ignore_index=True)


def model_offsets(models: list[str]) -> dict[str, float]:
    """Each model's horizontal offset from its group's position."""
    if len(models) == 1:
        return {models[0]: 0.0}
    step = CLUSTER_WIDTH / len(models)
    return {m: (i - (len(models) - 1) / 2) * step for i, m in enumerate(models)}


def draw_intervals(ax, row: pd.Series, x: float, marker: str) -> None:
    """One model's replicated 90% and 50% intervals and median at ``x``."""
    colour = GROUP_COLOURS.get(row["group"], "#555555")
    ax.vlines(x, row["replicated_q05"], row["replicated_q95"], colors=colour, linewidth=0.8)
    ax.vlines(x, row["replicated_q25"], row["replicated_q75"], colors=colour, linewidth=2.6)
    ax.scatter(
        x, row["replicated_q50"], marker=marker, s=14, color=colour, edgecolors="white",
        linewidths=0.4, zorder=3,
    )  # fmt: skip


def draw_panel(ax, cells: pd.DataFrame, models: list[str]) -> None:
    """One statistic in one subset: every group's models side by side, the observed value as a
    bar across them."""
    groups = [g for g in GROUPS if g in set(cells["group"])]
    offsets = model_offsets(models)
    markers = dict(zip(models, MODEL_MARKERS, strict=False))
    for x, group in enumerate(groups):
        in_group = cells[cells["group"] == group]
        for row in in_group.itertuples(index=False):
            row = pd.Series(row._asdict())
            draw_intervals(ax, row, x + offsets[row["model"]], markers[row["model"]])
        half = CLUSTER_WIDTH / 2 + 0.06
        ax.hlines(
            in_group["observed"].iloc[0],
            x - half,
            x + half,
            colors=OBSERVED_COLOUR,
            linewidth=1.1,
            zorder=4,
            path_effects=OBSERVED_HALO,
        )
    ax.set_xticks(range(len(groups)), groups, fontsize=6, rotation=30)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.tick_params(axis="y", labelsize=6)


def legend_handles(models: list[str]) -> list[Line2D]:
    """Marker per model, the observed bar, and the two interval widths."""
    handles = [
        Line2D([], [], marker=m, linestyle="none", color="#555555", markersize=4, label=model)
        for model, m in zip(models, MODEL_MARKERS, strict=False)
    ]
    return [
        *handles,
        Line2D([], [], color=OBSERVED_COLOUR, linewidth=1.1, label="observed"),
        Line2D([], [], color="#555555", linewidth=2.6, label="replicated 50%"),
        Line2D([], [], color="#555555", linewidth=0.8, label="replicated 90%"),
    ]


def make(check_csvs: list[Path], stem: Path) -> list[Path]:
    """Draw the figure from one or more models' ``ppc_new_subjects.csv``."""
    checks = read_checks(check_csvs)
    models = list(dict.fromkeys(checks["model"]))
    statistics = [s for s in STATISTIC_LABELS if s in set(checks["statistic"])]
    subsets = list(dict.fromkeys(checks["subset"]))
    fig, axes = plt.subplots(
        len(statistics),
        len(subsets),
        figsize=(DOUBLE_COLUMN_IN, 1.9 * len(statistics) + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for i, statistic in enumerate(statistics):
        for j, subset in enumerate(subsets):
            cells = checks[(checks["statistic"] == statistic) & (checks["subset"] == subset)]
            draw_panel(axes[i, j], cells, models)
            if i == 0:
                axes[i, j].set_title(subset, fontsize=8)
        axes[i, 0].set_ylabel(STATISTIC_LABELS[statistic], fontsize=7)
    fig.legend(
        handles=legend_handles(models),
        loc="outside lower center",
        ncol=len(models) + 3,
        fontsize=6,
        frameon=False,
    )
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "checks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(checks: tuple[Path, ...], stem: Path) -> None:
    """Draw the new-subject predictive checks of CHECKS (ppc_new_subjects.csv of each fitted
    model) into STEM.pdf/.png."""
    make(list(checks), stem)


if __name__ == "__main__":
    main()
