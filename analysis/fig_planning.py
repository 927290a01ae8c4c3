"""Figure 4 (planning): power against n for each question's plans, with n for 80% and 90%.

One panel per plan (biomarker cross-sectional and paired, mechanism cross-sectional and paired,
prognosis), for the plan's first endpoint: power of the alternative scenario with failures
counted as non-successes, a band of +/- 1.96 Monte Carlo SE (the Wilson 95% interval where
power is 0 or 1), and on the 80% and 90% lines the n read off by the validated sample-size
method with its 95% interval (``sample_size.csv``), the analyses' bars stacked slightly apart.
The manuscript's caption states these intervals. Reads result files only; never simulates. A
plan whose files are absent is left out, and the legend says so.

Usage: ``python -m analysis.fig_planning POWER_DIR OUTPUT_STEM`` (writes STEM.pdf and STEM.png)
"""

from __future__ import annotations

from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator, ScalarFormatter

from analysis.fig_power_curve import MCSE_MULTIPLIER, read_alternative_power
from analysis.style import ANALYSIS_COLOURS, DOUBLE_COLUMN_IN, save_figure

#: (plan folder, panel title, endpoint shown).
PANELS = (
    ("cross_sectional", "Biomarker, cross-sectional", "ratio_fold_change_Th17_Treg"),
    ("paired", "Biomarker, paired", "ratio_fold_change_Th17_Treg"),
    ("mechanism", "Mechanism, cross-sectional", "kappa_difference_Treg_Th17"),
    ("mechanism_paired", "Mechanism, paired", "kappa_difference_Treg_Th17"),
    ("mechanism_mfi", "Mechanism, cross-sectional, with MFI", "kappa_difference_Treg_Th17"),
    ("prognostic", "Prognosis", "exacerbation_log_or"),
)
#: The analyses drawn: the study's test, the mixed model, the Bayesian direction rule, and the
#: rank test of log MFI where a plan measures it.
SHOWN = (
    "mann_whitney",
    "wilcoxon",
    "logistic_lr",
    "mixed_model",
    "mann_whitney_mfi",
    "bayes_direction",
)
LABELS = {
    "mann_whitney": "Mann-Whitney",
    "mann_whitney_mfi": "Mann-Whitney, log MFI",
    "wilcoxon": "Wilcoxon signed-rank",
    "logistic_lr": "logistic regression (LR)",
    "mixed_model": "mixed model",
    "bayes_direction": "Bayesian, P(effect > 0) >= 0.975",
}
TARGETS = (0.8, 0.9)
N_COLS = 3


def power_band(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """+/- 1.96 MCSE around each power; the Wilson interval where the MCSE is blank."""
    power, mcse = rows["power_all"], rows["mcse_all"]
    low = np.where(mcse.notna(), power - MCSE_MULTIPLIER * mcse, rows["ci_low_all"])
    high = np.where(mcse.notna(), power + MCSE_MULTIPLIER * mcse, rows["ci_high_all"])
    return np.clip(low, 0, 1), np.clip(high, 0, 1)


def mark_sample_sizes(ax, sizes: pd.DataFrame, colour: str, offset: float) -> None:
    """n for each target power on its line, with its 95% interval as a bar."""
    for row in sizes.itertuples():
        if pd.isna(row.n_required):
            continue
        low = row.n_low if pd.notna(row.n_low) else row.n_required
        high = row.n_high if pd.notna(row.n_high) else row.n_required
        y = row.target_power + offset
        ax.plot([low, high], [y, y], color=colour, linewidth=1.2, solid_capstyle="butt")
        ax.plot(row.n_required, y, marker="|", markersize=6, color=colour)


def draw_plan(ax, power: pd.DataFrame, sizes: pd.DataFrame, endpoint: str) -> list[str]:
    """One plan's panel; returns the analyses drawn."""
    rows = power[power["endpoint"] == endpoint]
    drawn = [a for a in SHOWN if a in set(rows["analysis"])]
    for index, analysis in enumerate(drawn):
        own = rows[rows["analysis"] == analysis].sort_values("n")
        colour = ANALYSIS_COLOURS[analysis]
        low, high = power_band(own)
        ax.fill_between(own["n"], low, high, color=colour, alpha=0.18, linewidth=0)
        ax.plot(own["n"], own["power_all"], color=colour, marker="o", markersize=2.5, lw=1)
        marked = sizes[
            (sizes["endpoint"] == endpoint)
            & (sizes["analysis"] == analysis)
            & sizes["target_power"].isin(TARGETS)
        ]
        mark_sample_sizes(ax, marked, colour, offset=0.012 * (index - 1))
    for target in TARGETS:
        ax.axhline(target, color="#777777", linewidth=0.5, linestyle=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sorted(rows["n"].unique()))
    ax.set_ylim(0, 1.02)
    return drawn


def make(power_dir: Path, stem: Path) -> list[Path]:
    """Draw the figure from ``power_dir/PLAN/{power,sample_size}.csv``; returns the files."""
    present = [p for p in PANELS if (power_dir / p[0] / "power.csv").exists()]
    if not present:
        raise click.ClickException(f"no power.csv under {power_dir}/<plan>/ for any plan")
    rows = -(-len(present) // N_COLS)
    fig, axes = plt.subplots(
        rows,
        N_COLS,
        figsize=(DOUBLE_COLUMN_IN, 2.3 * rows + 0.7),
        squeeze=False,
        layout="constrained",
    )
    drawn: set[str] = set()
    for ax, (plan, title, endpoint) in zip(axes.flat, present, strict=False):
        power = read_alternative_power(power_dir / plan / "power.csv")
        sizes = pd.read_csv(power_dir / plan / "sample_size.csv")
        drawn |= set(draw_plan(ax, power, sizes, endpoint))
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[len(present) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("power", fontsize=7)
    for ax in axes[-1, :]:
        ax.set_xlabel("n treated patients (log scale)", fontsize=7)
    handles = [
        plt.Line2D([], [], color=ANALYSIS_COLOURS[a], marker="o", markersize=3, label=LABELS[a])
        for a in SHOWN
        if a in drawn
    ]
    missing = [title for panel in PANELS if panel not in present for title in panel[1:2]]
    legend = "Simulated trials. Not run: " + ", ".join(missing) if missing else None
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=3,
        fontsize=6,
        frameon=False,
        title=legend,
        title_fontsize=6,
    )
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("power_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(power_dir: Path, stem: Path) -> None:
    """Draw power against n for every plan under POWER_DIR into STEM.pdf and STEM.png."""
    make(power_dir, stem)


if __name__ == "__main__":
    main()
