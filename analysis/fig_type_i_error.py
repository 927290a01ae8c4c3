"""Supplementary Figure S4 (type-I error): rejection rate under each plan's nulls against n.

One panel per power plan (biomarker cross-sectional and paired, mechanism cross-sectional and
paired, prognosis), read from ``POWER_DIR/<plan>/type_i_error.csv``
(``simulations.summarise.type_i_table``). Each point is the rejection rate of one analysis
(colour) on one endpoint (filled or open marker) under one null scenario (marker shape and
line style) at one n, among the analyses that ran, with its Wilson 95% interval as error bars;
points are spread slightly along n so that their bars do not hide each other. The grey line
is the nominal one-sided level. Only analyses with a nominal level are drawn (the study's
tests, the mixed model and the Bayesian direction rule; the ROPE and precision rules have
none). A black ring marks a cell outside the family-wise tolerance (``within_familywise``).
The trials are simulated from the package's own model. Reads result files only; never
simulates. A plan whose file is absent is left out, and the legend says so.

Usage: ``python -m analysis.fig_type_i_error POWER_DIR OUTPUT_STEM`` (writes STEM.pdf and
STEM.png)
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator, ScalarFormatter

from analysis.fig_planning import LABELS as PLANNING_LABELS
from analysis.fig_planning import PANELS as PLANNING_PANELS
from analysis.fig_power_curve import analysis_colours
from analysis.style import DOUBLE_COLUMN_IN, save_figure

#: The question each shipped plan answers (its file's ``question``).
QUESTION_OF_PLAN = {
    "cross_sectional": "biomarker",
    "paired": "biomarker",
    "mechanism": "mechanism",
    "mechanism_paired": "mechanism",
    "mechanism_mfi": "mechanism",
    "prognostic": "prognosis",
}
#: (plan folder, panel title, question), in Figure 4's order and with its titles.
PLANS = tuple((plan, title, QUESTION_OF_PLAN[plan]) for plan, title, _ in PLANNING_PANELS)
#: What each question's null scenarios are (README, "Planning a study").
NULL_LABELS = {
    "biomarker": {
        "null": "biomarker: κ = 0 (drug changes nothing)",
        "null_ratio": "biomarker: drug acts, ratios unmoved",
    },
    "mechanism": {"null": "mechanism: one shared κ (alike in every subset)"},
    "prognosis": {"null": "prognosis: log OR = 0"},
}
SCENARIO_LINESTYLES = {"null": "-", "null_ratio": "--"}
SCENARIO_MARKERS = {"null": "o", "null_ratio": "^"}
#: Endpoints in drawing order (each plan's first endpoint filled, its second open).
ENDPOINT_ORDER = (
    "ratio_fold_change_Th17_Treg",
    "ratio_fold_change_Th1_Treg",
    "kappa_difference_Treg_Th17",
    "kappa_difference_Treg_Th1",
    "exacerbation_log_or",
)
#: Analyses in drawing order; others with a nominal level follow, sorted.
ANALYSIS_ORDER = (
    "mann_whitney",
    "wilcoxon",
    "logistic_lr",
    "logistic_wald",
    "mixed_model",
    "mann_whitney_mfi",
    "bayes_direction",
)
LABELS = {**PLANNING_LABELS, "logistic_wald": "logistic regression (Wald)"}
#: Half-width, in log n, over which a panel's series are spread along the n axis.
DODGE_LOG_HALF_WIDTH = 0.09
N_COLS = 2
LEGEND_TITLE_WIDTH = 60
INPUT_COLUMNS = [
    *("design", "scenario", "endpoint", "analysis", "n"),
    *("rejection_rate", "ci_low", "ci_high", "nominal_level", "within_familywise"),
]


def read_type_i(type_i_csv: Path) -> pd.DataFrame:
    """The rows of a ``type_i_error.csv`` with a nominal level, sorted by n.

    Parameters
    ----------
    type_i_csv : pathlib.Path
        CSV written from :func:`simulations.summarise.type_i_table`.

    Returns
    -------
    pandas.DataFrame
        Its rows with a nominal level; ``outside_familywise`` added (True only where the
        file's ``within_familywise`` is False).

    Raises
    ------
    ValueError
        If a needed column is missing.
    """
    # The scenario is called "null": pandas would read it as missing by default.
    table = pd.read_csv(type_i_csv, keep_default_na=False, na_values=[""])
    missing = [c for c in INPUT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{type_i_csv}: missing column(s) {', '.join(missing)}")
    table = table[table["nominal_level"].notna()]
    flag = table["within_familywise"].astype(str).str.lower().eq("false")
    return table.assign(outside_familywise=flag).sort_values("n", kind="stable")


def endpoint_label(endpoint: str) -> str:
    """A short label: ``Th17/Treg``, ``κ Treg − κ Th17`` or ``log OR``."""
    if endpoint.startswith("ratio_fold_change_"):
        return endpoint.removeprefix("ratio_fold_change_").replace("_", "/")
    if endpoint.startswith("kappa_difference_"):
        first, second = endpoint.removeprefix("kappa_difference_").split("_")
        return f"κ {first} − κ {second}"
    return {"exacerbation_log_or": "log OR"}.get(endpoint, endpoint)


def ordered(values, order) -> list[str]:
    """The distinct ``values``: those named in ``order`` first, in its order, then the rest."""
    present = set(values)
    known = [v for v in order if v in present]
    return known + sorted(present - set(known))


def panel_series(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The ``(endpoint, analysis, scenario)`` series of one panel, in drawing order."""
    present = set(zip(rows["endpoint"], rows["analysis"], rows["scenario"], strict=True))
    return [
        (endpoint, analysis, scenario)
        for endpoint in ordered(rows["endpoint"], ENDPOINT_ORDER)
        for analysis in ordered(rows["analysis"], ANALYSIS_ORDER)
        for scenario in sorted(set(rows["scenario"]))
        if (endpoint, analysis, scenario) in present
    ]


def dodged(n: np.ndarray, index: int, count: int) -> np.ndarray:
    """``n`` moved along the log axis by the series' share of the dodge width."""
    offsets = np.linspace(-DODGE_LOG_HALF_WIDTH, DODGE_LOG_HALF_WIDTH, count) if count > 1 else [0]
    return n * np.exp(offsets[index])


def series_style(endpoint: str, scenario: str, endpoints: list[str], colour: str) -> dict:
    """Marker by scenario, filled for the panel's first endpoint and open for the others."""
    is_first = endpoint == endpoints[0]
    return {
        "marker": SCENARIO_MARKERS.get(scenario, "s"),
        "markerfacecolor": colour if is_first else "white",
        "linestyle": SCENARIO_LINESTYLES.get(scenario, ":"),
    }


def draw_series(ax, rows: pd.DataFrame, x: np.ndarray, *, colour: str, style: dict, gid: str):
    """One series: rates with Wilson 95% bars joined by a faint line, and a ring on each cell
    outside the family-wise tolerance."""
    rate = rows["rejection_rate"].to_numpy(dtype=float)
    ax.plot(x, rate, color=colour, linewidth=0.5, alpha=0.45, linestyle=style["linestyle"])
    bars = np.vstack([rate - rows["ci_low"], rows["ci_high"] - rate])
    ax.errorbar(
        x,
        rate,
        yerr=np.clip(bars, 0, None),
        color=colour,
        elinewidth=0.6,
        capsize=0,
        markersize=2.8,
        markeredgewidth=0.7,
        marker=style["marker"],
        markerfacecolor=style["markerfacecolor"],
        linestyle="none",
        gid=gid,
    )
    flagged = rows["outside_familywise"].to_numpy(dtype=bool)
    if flagged.any():
        ax.plot(
            x[flagged],
            rate[flagged],
            linestyle="none",
            marker="o",
            markersize=7,
            markerfacecolor="none",
            markeredgecolor="black",
            markeredgewidth=0.8,
            gid="flag",
        )


def draw_plan(ax, rows: pd.DataFrame, plan: str, colours: dict[str, str]) -> None:
    """One plan's panel: every series, the nominal level, n ticks."""
    series = panel_series(rows)
    endpoints = ordered(rows["endpoint"], ENDPOINT_ORDER)
    for index, (endpoint, analysis, scenario) in enumerate(series):
        own = rows[
            (rows["endpoint"] == endpoint)
            & (rows["analysis"] == analysis)
            & (rows["scenario"] == scenario)
        ]
        draw_series(
            ax,
            own,
            dodged(own["n"].to_numpy(dtype=float), index, len(series)),
            colour=colours[analysis],
            style=series_style(endpoint, scenario, endpoints, colours[analysis]),
            gid=f"rate|{plan}|{endpoint}|{analysis}|{scenario}",
        )
    for level in sorted(set(rows["nominal_level"])):
        ax.axhline(level, color="#777777", linewidth=0.8, zorder=0, gid="nominal")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sorted(rows["n"].unique()))
    ax.set_ylim(0, max(0.12, 1.05 * float(rows["ci_high"].max())))
    ax.tick_params(labelsize=6)


def endpoint_note(rows: pd.DataFrame) -> str:
    """Which endpoint is filled and which open, for the panel's corner."""
    endpoints = ordered(rows["endpoint"], ENDPOINT_ORDER)
    marks = ("filled", "open")
    return ", ".join(
        f"{mark}: {endpoint_label(e)}" for mark, e in zip(marks, endpoints, strict=False)
    )


def analysis_handles(analyses: list[str], colours: dict[str, str]) -> list:
    """One legend entry per colour: analyses sharing one (the study's test) share an entry."""
    by_colour: dict[str, list[str]] = {}
    for analysis in analyses:
        by_colour.setdefault(colours[analysis], []).append(LABELS.get(analysis, analysis))
    return [
        Line2D([], [], color=colour, marker="o", markersize=3, label=" / ".join(labels))
        for colour, labels in by_colour.items()
    ]


def legend_handles(analyses: list[str], colours: dict, scenarios: list[tuple[str, str]]) -> list:
    """Colour per analysis, marker and line style per (question, null scenario), markings."""
    handles = analysis_handles(analyses, colours)
    handles += [
        Line2D(
            [],
            [],
            color="#444444",
            marker=SCENARIO_MARKERS.get(scenario, "s"),
            markersize=3,
            linestyle=SCENARIO_LINESTYLES.get(scenario, ":"),
            label=f"null: {NULL_LABELS.get(question, {}).get(scenario, scenario)}",
        )
        for question, scenario in scenarios
    ]
    handles.append(Line2D([], [], color="#777777", linewidth=0.8, label="nominal level"))
    handles.append(
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=7,
            markerfacecolor="none",
            markeredgecolor="black",
            label="outside the family-wise tolerance",
        )
    )
    return handles


def figure(power_dir: Path, plans=PLANS):
    """The figure (not saved) for the ``plans`` whose ``type_i_error.csv`` exists.

    Raises
    ------
    click.ClickException
        If no plan has the file.
    """
    present = [p for p in plans if (power_dir / p[0] / "type_i_error.csv").exists()]
    if not present:
        raise click.ClickException(f"no type_i_error.csv under {power_dir}/<plan>/ for any plan")
    tables = {plan: read_type_i(power_dir / plan / "type_i_error.csv") for plan, *_ in present}
    analyses = ordered(pd.concat([t["analysis"] for t in tables.values()]), ANALYSIS_ORDER)
    colours = analysis_colours(analyses)
    n_rows = -(-(len(present) + 1) // N_COLS)
    fig, axes = plt.subplots(
        n_rows,
        N_COLS,
        figsize=(DOUBLE_COLUMN_IN, 2.2 * n_rows + 0.5),
        squeeze=False,
        layout="constrained",
    )
    scenarios: list[tuple[str, str]] = []
    for ax, (plan, title, question) in zip(axes.flat, present, strict=False):
        rows = tables[plan]
        draw_plan(ax, rows, plan, colours)
        ax.set_gid(f"panel|{plan}")
        ax.set_title(title, fontsize=8)
        ax.text(0.98, 0.97, endpoint_note(rows), transform=ax.transAxes, fontsize=5.5,
                ha="right", va="top")  # fmt: skip
        scenarios += [(question, s) for s in sorted(set(rows["scenario"]))]
    for ax in axes.flat[len(present) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("rejection rate", fontsize=7)
    for ax in axes.flat[max(0, len(present) - N_COLS) : len(present)]:
        ax.set_xlabel("n treated patients (log scale)", fontsize=7)
    missing = [title for plan, title, _ in PLANS if (plan, title) not in {p[:2] for p in present}]
    legend_title = textwrap.fill(
        "Simulated null trials; bars: Wilson 95% intervals"
        + (f". Not run: {'; '.join(missing)}" if missing else ""),
        LEGEND_TITLE_WIDTH,
    )
    axes.flat[-1].legend(
        handles=legend_handles(analyses, colours, list(dict.fromkeys(scenarios))),
        loc="center",
        fontsize=6,
        frameon=False,
        title=legend_title,
        title_fontsize=6,
    )
    return fig


def make(power_dir: Path, stem: Path, plans=PLANS) -> list[Path]:
    """Draw the figure from ``power_dir/PLAN/type_i_error.csv``; returns the files written."""
    fig = figure(power_dir, plans)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("power_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(power_dir: Path, stem: Path) -> None:
    """Draw the type-I error of every plan under POWER_DIR into STEM.pdf and STEM.png."""
    try:
        make(power_dir, stem)
    except ValueError as err:  # a malformed input file: one line, no traceback
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    main()
