"""Figure: the n for 80% power against each varied assumption, one panel per assumption.

Reads ``sample_size_sensitivity.csv`` (``simulations.sensitivity``); it never simulates. Points
are ``n_required`` with their 95% interval (``n_low`` to ``n_high``; an open end is drawn to the
grid's edge), one line per endpoint and analysis; a triangle at the top of the grid marks a
value at which the target is not reached within it (``beyond_grid``); the dotted line is the
plan's own value.

Usage: ``python -m analysis.fig_sample_size_sensitivity SENSITIVITY_CSV OUTPUT``
"""

from __future__ import annotations

from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.style import panel_grid

TARGET = 0.8
N_COLS = 2


def draw_panel(ax, rows: pd.DataFrame) -> None:
    """One assumption: a line per (endpoint, analysis), the plan's value dotted."""
    for (endpoint, analysis), line in rows.groupby(["endpoint", "analysis"], sort=True):
        line = line.sort_values("value")
        shown = line[line["status"] != "beyond_grid"]
        low = shown["n_low"].fillna(shown["n_min_grid"])
        high = shown["n_high"].fillna(shown["n_max_grid"])
        errors = np.vstack([shown["n_required"] - low, high - shown["n_required"]])
        drawn = ax.errorbar(
            shown["value"],
            shown["n_required"],
            yerr=np.clip(errors, 0, None),
            marker="o",
            markersize=3,
            linewidth=1,
            capsize=2,
            label=f"{analysis}, {endpoint}",
        )
        beyond = line[line["status"] == "beyond_grid"]
        ax.scatter(beyond["value"], beyond["n_max_grid"], marker="^", color=drawn[0].get_color())
    ax.axvline(rows["plan_value"].iloc[0], color="0.4", linestyle=":", linewidth=0.8)
    ax.set_title(str(rows["assumption"].iloc[0]), fontsize=8)
    ax.set_xlabel("assumed value (dotted: the plan's)", fontsize=7)
    ax.set_ylabel(f"n for {TARGET:.0%} power", fontsize=7)
    ax.tick_params(labelsize=7)


def make(sensitivity_csv: Path, output: Path) -> None:
    """Draw the sensitivity figure from ``sensitivity_csv`` and save it to ``output``."""
    table = pd.read_csv(sensitivity_csv)
    table = table[np.isclose(table["target_power"], TARGET)]
    if table.empty:
        raise ValueError(f"{sensitivity_csv}: no rows at target power {TARGET}")
    panels = list(table.groupby("assumption", sort=True))
    fig, axes = panel_grid(len(panels), N_COLS)
    for ax, (_, rows) in zip(axes.flat, panels, strict=False):
        draw_panel(ax, rows)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=6)
    fig.suptitle(
        "n for 80% power as one assumption varies (simulated trials; 95% intervals)", fontsize=8
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


@click.command()
@click.argument("sensitivity_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def main(sensitivity_csv: Path, output: Path) -> None:
    """Draw n for 80% power against each assumption of SENSITIVITY_CSV into OUTPUT."""
    make(sensitivity_csv, output)


if __name__ == "__main__":
    main()
