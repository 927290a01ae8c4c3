"""Figure 3 (CD49d ratios): per-subject ratios, their posterior fold change, and exacerbation.

(a) Each subject's CD49d ratio (positive rate of Th1 or Th17 over that of Treg, from the cohort
    file as the study's analysis computes it: ``analysis.frequentist.subject_measures``), one
    point per subject and group, the group median as a bar; the patients who had an
    exacerbation under natalizumab (``exacerbation`` = 1) ringed. Log scale.
(b) The posterior ratio fold change (``ratio_fold_change`` of each given ``estimands.csv``: the
    CD49d ratio in MS_NTZ over that in MS_naive, population averages) per effector subset:
    posterior mean and 95% equal-tailed interval, one row per fit; 1 (no change) marked.
(c) The ``exacerbation`` model's log odds ratio of exacerbation per SD of the latent log CD49d
    ratio (``exacerbation_log_or``): posterior density with its 95% equal-tailed interval, and
    the prior's density and interval where the fit has a prior group; 0 marked.

Reads result files only; never fits.

Usage: ``python -m analysis.fig_ratios COHORT_CSV EXACERBATION_FIT OUTPUT_STEM --estimands
ESTIMANDS_CSV [--estimands ESTIMANDS_CSV ...]`` (writes OUTPUT_STEM.pdf and OUTPUT_STEM.png;
each estimands file is labelled by its folder, the model's name under ``results/fits/``)
"""

from __future__ import annotations

from pathlib import Path

import arviz as az
import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
from scipy.stats import gaussian_kde

from analysis.fit_files import read_fit
from analysis.frequentist import RATIO, subject_measures
from analysis.style import DOUBLE_COLUMN_IN, GROUP_COLOURS, SUBSET_COLOURS, save_figure
from models.data import load_cohort
from models.estimands import CI_PROB
from models.schema import GROUPS

JITTER = 0.12
FONT_SIZE = 7
PRIOR_COLOUR = "#999999"
POSTERIOR_COLOUR = "#000000"
#: Marker per fit in panel (b), in the order the estimands files are given.
FIT_MARKERS = ("o", "s", "D", "^")
FOLD_CHANGE_ESTIMAND = "ratio_fold_change"
LOG_OR = "exacerbation_log_or"
SAMPLE_DIMS = ["chain", "draw"]
RATIO_TICKS = (1, 2, 3, 5, 10, 20, 30, 50, 100)
FOLD_CHANGE_TICKS = (0.5, 0.75, 1, 1.5, 2, 3, 4)


def subject_ratios(cohort_csv: Path) -> pd.DataFrame:
    """Each subject's CD49d ratios, as the study's analysis computes them.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject_id, group, exacerbation, subset`` (``Th1/Treg``...) ``, value``.
    """
    measures = subject_measures(load_cohort(cohort_csv))
    ratios = measures[measures["quantity"] == RATIO]
    return ratios.drop(columns="quantity").reset_index(drop=True)


def fold_changes(estimands_csvs: list[Path]) -> pd.DataFrame:
    """``ratio_fold_change`` rows of each estimands file, with ``fit`` (the file's folder)."""
    tables = []
    for path in estimands_csvs:
        table = pd.read_csv(path)
        rows = table[table["estimand"] == FOLD_CHANGE_ESTIMAND]
        tables.append(rows.assign(fit=Path(path).parent.name))
    return pd.concat(tables, ignore_index=True)


def plain_log_axis(axis, ticks: tuple[float, ...]) -> None:
    """A log-scaled axis with plain-number labels at ``ticks``."""
    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def draw_subject_ratios(ax, ratios: pd.DataFrame, rng: np.random.Generator) -> None:
    """Panel (a), one ratio: subjects by group, group medians, exacerbations ringed."""
    groups = [g for g in GROUPS if g in set(ratios["group"])]
    label = ratios["subset"].iloc[0]
    for x, group in enumerate(groups):
        rows = ratios[ratios["group"] == group]
        positions = x + rng.uniform(-JITTER, JITTER, len(rows))
        points = ax.scatter(positions, rows["value"], s=9, color=GROUP_COLOURS[group], lw=0)
        points.set_gid(f"subjects:{label}:{group}")
        ax.plot([x - 0.25, x + 0.25], [rows["value"].median()] * 2, color="black", lw=1)
        relapsed = rows["exacerbation"].eq(1).to_numpy()
        if relapsed.any():
            ring = ax.scatter(
                positions[relapsed],
                rows["value"][relapsed],
                s=40,
                facecolors="none",
                edgecolors="black",
                lw=0.9,
            )
            ring.set_gid(f"exacerbation:{label}")
    plain_log_axis(ax.yaxis, RATIO_TICKS)
    ax.set_xticks(range(len(groups)), groups, rotation=30)
    ax.set_title(f"CD49d ratio {label}", fontsize=FONT_SIZE)


def draw_fold_changes(ax, table: pd.DataFrame) -> None:
    """Panel (b): posterior mean and 95% interval of the ratio fold change per subset and fit."""
    subsets = list(dict.fromkeys(table["subset"]))
    fits = list(dict.fromkeys(table["fit"]))
    offsets = np.linspace(-0.15, 0.15, len(fits)) if len(fits) > 1 else [0.0]
    for y, subset in enumerate(subsets):
        for offset, fit, marker in zip(offsets, fits, FIT_MARKERS, strict=False):
            row = table[(table["subset"] == subset) & (table["fit"] == fit)].iloc[0]
            colour = SUBSET_COLOURS.get(subset, POSTERIOR_COLOUR)
            (line,) = ax.plot([row["q2.5"], row["q97.5"]], [y + offset] * 2, color=colour, lw=1.2)
            line.set_gid(f"interval:{fit}:{subset}")
            ax.plot(row["mean"], y + offset, marker, color="white", mec=colour, ms=4, mew=1)
    ax.axvline(1, color="grey", lw=0.6)
    plain_log_axis(ax.xaxis, FOLD_CHANGE_TICKS)
    ax.set_yticks(range(len(subsets)), [f"{s}/Treg" for s in subsets])
    ax.set_ylim(len(subsets) - 0.5, -0.5)
    ax.set_xlabel("Ratio fold change, MS_NTZ over MS_naive")
    handles = [
        Line2D([], [], ls="", marker=m, color="white", mec="black", label=fit)
        for fit, m in zip(fits, FIT_MARKERS, strict=False)
    ]
    ax.legend(
        handles=handles,
        frameon=False,
        fontsize=FONT_SIZE - 1,
        loc="center left",
        title=f"posterior mean, {CI_PROB:.0%} interval",
        title_fontsize=FONT_SIZE - 1,
    )


def log_or_draws(fit_nc: Path) -> dict[str, xr.DataArray]:
    """``exacerbation_log_or`` draws of the posterior and, where stored, of the prior."""
    tree = read_fit(fit_nc)
    return {
        group: tree[group].to_dataset()[LOG_OR]
        for group in ("prior", "posterior")
        if group in tree.children
    }


def draw_log_or(ax, draws: dict[str, xr.DataArray]) -> None:
    """Panel (c): densities of the prior and posterior log odds ratio, 95% intervals below."""
    colours = {"prior": PRIOR_COLOUR, "posterior": POSTERIOR_COLOUR}
    values = np.concatenate([v.to_numpy().ravel() for v in draws.values()])
    grid = np.linspace(*np.quantile(values, [0.002, 0.998]), 300)
    for level, (group, draw) in enumerate(draws.items()):
        flat = draw.to_numpy().ravel()
        ax.plot(grid, gaussian_kde(flat)(grid), color=colours[group], lw=1.2, label=group)
        interval = az.eti(draw, prob=CI_PROB, dim=SAMPLE_DIMS).to_numpy()
        y = -0.04 * (level + 1)
        (bar,) = ax.plot(interval, [y, y], color=colours[group], lw=2, solid_capstyle="butt")
        bar.set_gid(f"interval:{group}")
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("Log odds ratio of exacerbation\nper SD of the latent log CD49d ratio")
    ax.set_ylabel("Density")
    ax.legend(frameon=False, fontsize=FONT_SIZE - 1, title=f"{CI_PROB:.0%} intervals below")


def build_figure(cohort_csv: Path, estimands_csvs: list[Path], exacerbation_fit: Path, *, seed=1):
    """Draw the panels; ``seed`` fixes the points' horizontal jitter. Returns the figure."""
    ratios = subject_ratios(cohort_csv)
    labels = list(dict.fromkeys(ratios["subset"]))
    rng = np.random.default_rng(seed)
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1}):
        fig = plt.figure(figsize=(DOUBLE_COLUMN_IN, 4.8), layout="constrained")
        grid = fig.add_gridspec(2, len(labels))
        ratio_axes = [fig.add_subplot(grid[0, i]) for i in range(len(labels))]
        for ax, label in zip(ratio_axes, labels, strict=True):
            draw_subject_ratios(ax, ratios[ratios["subset"] == label], rng)
        ratio_axes[0].set_ylabel("CD49d ratio per subject")
        ratio_axes[-1].scatter(
            [],
            [],
            s=40,
            facecolors="none",
            edgecolors="black",
            label="exacerbation under natalizumab",
        )
        ratio_axes[-1].legend(frameon=False, fontsize=FONT_SIZE - 1, loc="upper left")
        axes = {
            "a": ratio_axes[0],
            "b": fig.add_subplot(grid[1, 0]),
            "c": fig.add_subplot(grid[1, 1:]),
        }
        draw_fold_changes(axes["b"], fold_changes(estimands_csvs))
        draw_log_or(axes["c"], log_or_draws(exacerbation_fit))
        for key, ax in axes.items():
            ax.set_title(f"({key})", loc="left", fontweight="bold")
    return fig


def make(
    cohort_csv: Path, estimands_csvs: list[Path], exacerbation_fit: Path, stem: Path
) -> list[Path]:
    """Draw the figure into ``stem.pdf`` and ``stem.png``; returns both paths."""
    fig = build_figure(cohort_csv, estimands_csvs, exacerbation_fit)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cohort", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("exacerbation_fit", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--estimands",
    "estimands_csvs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    required=True,
    help="An estimands.csv with ratio_fold_change rows (repeat for several fits).",
)
def main(cohort: Path, exacerbation_fit: Path, stem: Path, estimands_csvs: tuple[Path, ...]):
    """Draw Figure 3 (CD49d ratios) into STEM.pdf and STEM.png."""
    make(cohort, list(estimands_csvs), exacerbation_fit, stem)


if __name__ == "__main__":
    main()
