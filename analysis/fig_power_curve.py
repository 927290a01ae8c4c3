"""Figure: power of simulated trials against n, one panel per design and endpoint.

Reads the power table and the sample-size table written from the simulation records (see
``simulations/summarise.py``); it never simulates. Power counts failed analyses as
non-successes (``power_all``); the shaded band is +/- 1.96 Monte Carlo standard errors, the thin
line the monotone, interpolated curve that the sample-size table was read from
(``simulations.sample_size``), and the dashed vertical line the n reaching 80% power on it.

Usage: ``python -m analysis.fig_power_curve POWER_CSV SAMPLE_SIZE_CSV OUTPUT``
"""

from __future__ import annotations

from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator, ScalarFormatter

from analysis.style import ANALYSIS_COLOURS, panel_grid
from simulations.sample_size import interpolated_curve

#: Colours, in order, for analyses not named in ANALYSIS_COLOURS (sorted by name).
EXTRA_COLOURS = ("#8C8C8C", "#CCB974", "#64B5CD", "#222222")
TARGET_POWERS = (0.8, 0.9)
MARKED_TARGET = 0.8
MARKED_STATUSES = ("ok", "coarse_grid")
MCSE_MULTIPLIER = 1.96
POWER_INPUT_COLUMNS = [
    *("design", "scenario", "endpoint", "analysis", "n"),
    *("power_all", "mcse_all", "ci_low_all", "ci_high_all", "n_reps"),
]
N_COLS = 2
Y_LABEL = "power (failures = no success)"
X_LABEL = "n natalizumab-treated patients per simulated trial (log scale)"


def analysis_colours(analyses) -> dict[str, str]:
    """Colour per analysis: ``ANALYSIS_COLOURS``, then ``EXTRA_COLOURS`` for unnamed ones.

    Parameters
    ----------
    analyses : iterable of str
        Analysis names to colour.

    Returns
    -------
    dict of str to str
        Hex colour per analysis; unnamed analyses take extra colours in sorted order,
        cycling if there are more of them than colours.
    """
    unnamed = sorted(set(analyses) - set(ANALYSIS_COLOURS))
    extra = {a: EXTRA_COLOURS[i % len(EXTRA_COLOURS)] for i, a in enumerate(unnamed)}
    return {a: ANALYSIS_COLOURS.get(a, extra.get(a)) for a in analyses}


def read_alternative_power(power_csv: Path) -> pd.DataFrame:
    """The alternative-scenario rows of a power table CSV.

    Parameters
    ----------
    power_csv : pathlib.Path
        CSV written from :func:`simulations.summarise.power_table`.

    Returns
    -------
    pandas.DataFrame
        Rows with ``scenario == "alternative"``, sorted by design, endpoint, analysis, n.

    Raises
    ------
    ValueError
        If a needed column is missing or there is no alternative-scenario row.
    """
    power = pd.read_csv(power_csv)
    missing = [c for c in POWER_INPUT_COLUMNS if c not in power.columns]
    if missing:
        raise ValueError(f"{power_csv}: missing column(s) {', '.join(missing)}")
    alternative = power.loc[power["scenario"].eq("alternative")]
    if alternative.empty:
        raise ValueError(f"{power_csv}: no scenario == 'alternative' rows to plot")
    return alternative.sort_values(["design", "endpoint", "analysis", "n"])


def marked_sample_sizes(sample_size_csv: Path) -> pd.DataFrame:
    """Rows of the sample-size table to mark: target 80%, status ok or coarse_grid.

    Parameters
    ----------
    sample_size_csv : pathlib.Path
        CSV written from :func:`simulations.sample_size.sample_size_table`.

    Returns
    -------
    pandas.DataFrame
        Columns ``design, endpoint, analysis, n_required, status``.
    """
    sizes = pd.read_csv(sample_size_csv)
    is_marked = np.isclose(sizes["target_power"], MARKED_TARGET) & sizes["status"].isin(
        MARKED_STATUSES
    )
    return sizes.loc[is_marked, ["design", "endpoint", "analysis", "n_required", "status"]]


def fitted_curve(rows: pd.DataFrame):
    """The monotone curve of one analysis, interpolated as the sample-size table reads it.

    Parameters
    ----------
    rows : pandas.DataFrame
        Power-table rows of one analysis, sorted by n (columns ``n, power_all, n_reps``).

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(n, power)`` across the grid, or None for fewer than 2 grid points.
    """
    if len(rows) < 2:
        return None
    trials = rows["n_reps"].to_numpy(dtype=float)
    return interpolated_curve(rows["n"], np.rint(rows["power_all"] * trials), trials)


def draw_analysis(ax, rows: pd.DataFrame, colour: str, marked: pd.DataFrame) -> None:
    """Draw one analysis: points and line, MCSE band, fitted curve, n for 80% power.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The panel.
    rows : pandas.DataFrame
        Power-table rows of one analysis, sorted by n.
    colour : str
        The analysis's colour.
    marked : pandas.DataFrame
        Its sample-size row to mark (zero or one row).
    """
    n, power, mcse = rows["n"], rows["power_all"], rows["mcse_all"]
    # +- 1.96 MCSE; at power 0 or 1 (no MCSE) the Wilson interval
    low = np.where(mcse.notna(), power - MCSE_MULTIPLIER * mcse, rows["ci_low_all"])
    high = np.where(mcse.notna(), power + MCSE_MULTIPLIER * mcse, rows["ci_high_all"])
    ax.fill_between(
        n,
        np.clip(low, 0, 1),
        np.clip(high, 0, 1),
        color=colour,
        alpha=0.18,
        linewidth=0,
    )
    ax.plot(n, power, color=colour, marker="o", markersize=3, linewidth=1)
    curve = fitted_curve(rows)
    if curve is not None:
        ax.plot(*curve, color=colour, linewidth=0.6, alpha=0.9)
    for mark in marked.itertuples():
        ax.axvline(mark.n_required, color=colour, linestyle="--", linewidth=0.9)
        label = f"{mark.n_required:.0f}" + ("*" if mark.status == "coarse_grid" else "")
        ax.text(
            *(mark.n_required, 0.02, label),
            transform=ax.get_xaxis_transform(),
            rotation=90,
            fontsize=6,
            color=colour,
            ha="right",
            va="bottom",
        )


def draw_panel(ax, rows: pd.DataFrame, marked: pd.DataFrame, colours: dict[str, str]) -> None:
    """Draw one (design, endpoint) panel: every analysis, the target lines and the axes.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The panel.
    rows : pandas.DataFrame
        Power-table rows of this design and endpoint.
    marked : pandas.DataFrame
        Sample-size rows to mark for this design and endpoint.
    colours : dict of str to str
        Colour per analysis.
    """
    for analysis, analysis_rows in rows.groupby("analysis", sort=True):
        own = marked.loc[marked["analysis"].eq(analysis)]
        draw_analysis(ax, analysis_rows.sort_values("n"), colours[analysis], own)
    for target in TARGET_POWERS:
        ax.axhline(target, color="0.4", linestyle=":", linewidth=0.8)
    design, endpoint = rows["design"].iloc[0], rows["endpoint"].iloc[0]
    ax.set_title(f"{endpoint}\n({design} design)", fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(sorted(rows["n"].unique()))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(0, 1.02)
    ax.tick_params(labelsize=7)


def legend_handles(colours: dict[str, str]) -> list:
    """Legend entries: one per analysis, then the meaning of band, curve and lines.

    Parameters
    ----------
    colours : dict of str to str
        Colour per analysis, in legend order.

    Returns
    -------
    list of matplotlib.artist.Artist
        Legend handles carrying their labels.
    """
    per_analysis = [
        Line2D([], [], color=c, marker="o", markersize=3, linewidth=1, label=a)
        for a, c in colours.items()
    ]
    return [
        *per_analysis,
        Patch(color="0.5", alpha=0.3, label=f"±{MCSE_MULTIPLIER} MCSE"),
        Line2D([], [], color="0.3", linewidth=0.6, label="monotone, interpolated"),
        Line2D([], [], color="0.3", linestyle="--", label="n for 80% power (* coarse grid)"),
        Line2D([], [], color="0.4", linestyle=":", label="80% and 90% power"),
    ]


def make(power_csv: Path, sample_size_csv: Path, output: Path) -> None:
    """Draw the power-curve figure of the simulated trials and save it to ``output``.

    Parameters
    ----------
    power_csv : pathlib.Path
        Power table CSV (:func:`simulations.summarise.power_table`).
    sample_size_csv : pathlib.Path
        Sample-size table CSV (:func:`simulations.sample_size.sample_size_table`).
    output : pathlib.Path
        Image path; its suffix (``.png``, ``.pdf``) sets the format. Parents are created.

    Raises
    ------
    ValueError
        If the power table has no alternative-scenario rows or lacks a needed column.
    """
    power = read_alternative_power(power_csv)
    marked = marked_sample_sizes(sample_size_csv)
    colours = analysis_colours(sorted(power["analysis"].unique()))
    panels = list(power.groupby(["design", "endpoint"], sort=True))
    fig, axes = panel_grid(len(panels), N_COLS)
    n_cols = axes.shape[1]
    for ax, ((design, endpoint), rows) in zip(axes.flat, panels, strict=False):
        is_panel = marked["design"].eq(design) & marked["endpoint"].eq(endpoint)
        draw_panel(ax, rows, marked.loc[is_panel], colours)
    for ax in axes[:, 0]:
        ax.set_ylabel(Y_LABEL, fontsize=7)
    for column in range(n_cols):
        # the lowest panel drawn in each column carries the x label (the last row may be short)
        lowest = max(i for i in range(column, len(panels), n_cols))
        axes.flat[lowest].set_xlabel(X_LABEL, fontsize=7)
    fig.legend(handles=legend_handles(colours), loc="outside lower center", ncols=4, fontsize=6)
    fig.suptitle(
        "Power of simulated trials by sample size (alternative scenario; "
        "failed analyses counted as non-successes)",
        fontsize=8,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


@click.command()
@click.argument("power_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("sample_size_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def main(power_csv: Path, sample_size_csv: Path, output: Path) -> None:
    """Draw the power curves of the simulated trials from POWER_CSV and SAMPLE_SIZE_CSV."""
    make(power_csv, sample_size_csv, output)


if __name__ == "__main__":
    main()
