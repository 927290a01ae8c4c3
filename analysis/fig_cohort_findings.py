"""Supplementary Figure S5: the SIMULATED cohort against the study's reported findings R1-R4.

The bundled cohort is simulated with the study's design; its seed and its exacerbation log odds
ratio were chosen so that it shows R1-R4 (``simulations/configs/kimura2016_cohort.toml``), so
this figure checks that choice and shows what it looks like; it is not evidence for the
findings. What the study reported (directions only) comes from ``data/study_findings.csv``.

Panels: R1 and R2, each subject's CD49d ratio (positive rate of the effector subset over that
of Treg; ``analysis.frequentist.subject_measures``) in MS_naive and MS_NTZ, the group medians as
bars and the two-sided Mann-Whitney p of ``frequentist.csv``; R3, the relative reduction of the
median % CD49d+ per subset, MS_NTZ against MS_naive (``analysis.frequentist.relative_loss``);
R4, both ratios of the 2 exacerbators against the other 6 treated patients (descriptive: with
2 vs 6 the exact test's p cannot fall below the ``min_attainable_p`` of ``frequentist.csv``).
Each panel's title gives the reported finding and whether the simulated cohort shows it
(``analysis.frequentist.study_findings``). Reads files only; never fits.

Usage: ``python -m analysis.fig_cohort_findings COHORT_CSV FREQUENTIST_CSV FINDINGS_CSV
COHORT_CONFIG_TOML OUTPUT_STEM`` (writes STEM.pdf and STEM.png)
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.frequentist import (
    PCT,
    RATIO,
    relative_loss,
    study_findings,
    subject_measures,
)
from analysis.style import DOUBLE_COLUMN_IN, GROUP_COLOURS, SUBSET_COLOURS, save_figure
from models.data import Cohort, CohortFileError, load_cohort
from models.schema import NAIVE_GROUP, TREATED_GROUP

FINDINGS = ("R1", "R2", "R3", "R4")
FINDINGS_COLUMNS = ["finding", "quantity", "subset", "comparison", "reported", "source"]
JITTER = 0.12
MEDIAN_HALF_WIDTH = 0.28
TITLE_WIDTH = 58
SUPTITLE_WIDTH = 120
EXACERBATION_MARKER = "^"
OTHER_MARKER = "o"


def read_findings(findings_csv: Path) -> pd.DataFrame:
    """The study's reported findings, indexed by ``finding``.

    Raises
    ------
    ValueError
        If a column or one of R1-R4 is missing.
    """
    findings = pd.read_csv(findings_csv)
    missing = [c for c in FINDINGS_COLUMNS if c not in findings.columns]
    missing += [f for f in FINDINGS if f not in set(findings.get("finding", []))]
    if missing:
        raise ValueError(f"{findings_csv}: missing {', '.join(missing)}")
    return findings.set_index("finding")


def cohort_choice(config_toml: Path) -> tuple[int, float]:
    """The cohort's root seed and exacerbation log odds ratio from its configuration file.

    Raises
    ------
    ValueError
        If the file lacks ``seed`` or ``parameters.exacerbation_log_or.value``.
    """
    raw = tomllib.loads(config_toml.read_text(encoding="utf-8"))
    try:
        return int(raw["seed"]), float(raw["parameters"]["exacerbation_log_or"]["value"])
    except KeyError as err:
        raise ValueError(f"{config_toml}: no {err.args[0]!r} (a cohort configuration?)") from err


def check_frequentist_matches(table: pd.DataFrame, measures: pd.DataFrame, path: Path) -> None:
    """Refuse a ``frequentist.csv`` whose medians are not the cohort's (another cohort's file).

    Raises
    ------
    ValueError
        Naming the first quantity, subset and group whose median differs.
    """
    described = table[table["analysis"] == "descriptive"]
    medians = measures.groupby(["quantity", "subset", "group"])["value"].median()
    for row in described.itertuples():
        key = (row.quantity, row.subset, row.group)
        if key not in medians.index or not np.isclose(medians[key], row.median):
            raise ValueError(
                f"{path} does not match the cohort: median of {'/'.join(map(str, key))}"
            )


def frequentist_row(table: pd.DataFrame, analysis: str, subset: str) -> pd.Series:
    """The ``frequentist.csv`` row of one ratio's test."""
    rows = table[
        (table["analysis"] == analysis) & (table["quantity"] == RATIO) & (table["subset"] == subset)
    ]
    if rows.empty:
        raise ValueError(f"frequentist.csv has no {analysis} row for {subset}")
    return rows.iloc[0]


def panel_title(finding: str, reported: str, shown: bool, detail: str) -> str:
    """The reported finding, then whether the simulated cohort shows it and by what."""
    verdict = "simulated cohort shows it" if shown else "simulated cohort does NOT show it"
    head = textwrap.fill(f"{finding}, reported: {reported}", TITLE_WIDTH)
    return f"{head}\n{textwrap.fill(f'{verdict}: {detail}', TITLE_WIDTH)}"


def draw_ratio_panel(ax, ratios: pd.DataFrame, rng) -> None:
    """One ratio per subject, MS_naive and MS_NTZ, with the group medians as bars."""
    for x, group in enumerate((NAIVE_GROUP, TREATED_GROUP)):
        own = ratios[ratios["group"] == group]
        is_event = own["exacerbation"].eq(1).to_numpy()
        jitter = x + rng.uniform(-JITTER, JITTER, len(own))
        for mask, marker in ((~is_event, OTHER_MARKER), (is_event, EXACERBATION_MARKER)):
            ax.scatter(
                jitter[mask],
                own["value"].to_numpy()[mask],
                s=9 if marker == OTHER_MARKER else 16,
                marker=marker,
                color=GROUP_COLOURS[group],
                alpha=0.8,
                linewidths=0,
            )
        median = float(own["value"].median())
        ax.plot(
            [x - MEDIAN_HALF_WIDTH, x + MEDIAN_HALF_WIDTH],
            [median, median],
            color="black",
            linewidth=1.2,
            gid=f"median|{own['subset'].iloc[0]}|{group}",
        )
        ax.text(x + MEDIAN_HALF_WIDTH + 0.03, median, f"{median:.1f}", fontsize=6, va="center")
    ax.set_xticks([0, 1], [NAIVE_GROUP, TREATED_GROUP], fontsize=7)
    ax.set_xlim(-0.5, 1.6)
    ax.text(
        0.02,
        0.97,
        "▲ exacerbation under natalizumab (R4)",
        transform=ax.transAxes,
        fontsize=6,
        va="top",
    )
    ax.set_ylabel(f"CD49d ratio {ratios['subset'].iloc[0]}", fontsize=7)


def draw_loss_panel(ax, measures: pd.DataFrame) -> None:
    """Relative reduction of the median % CD49d+ per subset, MS_NTZ against MS_naive."""
    loss = 100 * relative_loss(measures)
    medians = measures[measures["quantity"] == PCT].groupby(["subset", "group"])["value"].median()
    subsets = list(dict.fromkeys(measures.loc[measures["quantity"] == PCT, "subset"]))
    for x, subset in enumerate(subsets):
        ax.bar(
            x,
            loss[subset],
            color=SUBSET_COLOURS.get(subset, "#888888"),
            width=0.6,
            gid=f"loss|{subset}",
        )
        change = f"{medians[(subset, NAIVE_GROUP)]:.1f} → {medians[(subset, TREATED_GROUP)]:.1f}%"
        ax.text(
            x,
            loss[subset] + 1,
            f"{loss[subset]:.0f}%\n({change})",
            ha="center",
            va="bottom",
            fontsize=6,
        )
    ax.set_xticks(range(len(subsets)), subsets, fontsize=7)
    ax.set_ylim(0, max(100.0, float(loss.max()) * 1.35))
    ax.set_ylabel("relative reduction of median\n% CD49d+, MS_NTZ vs MS_naive (%)", fontsize=7)


def draw_exacerbation_panel(ax, ratios: pd.DataFrame, rng) -> None:
    """Both ratios of the treated patients: the exacerbators against the others."""
    treated = ratios[ratios["group"] == TREATED_GROUP]
    labels = list(dict.fromkeys(treated["subset"]))
    colour = GROUP_COLOURS[TREATED_GROUP]
    for x, label in enumerate(labels):
        own = treated[treated["subset"] == label]
        for offset, event, marker in ((-0.15, 0, OTHER_MARKER), (0.15, 1, EXACERBATION_MARKER)):
            values = own.loc[own["exacerbation"] == event, "value"].to_numpy()
            ax.scatter(
                x + offset + rng.uniform(-0.05, 0.05, len(values)),
                values,
                s=14,
                marker=marker,
                color=colour if event else "white",
                edgecolors=colour,
                linewidths=0.8,
                gid=f"exacerbation|{label}|{event}",
            )
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel("CD49d ratio, MS_NTZ patients", fontsize=7)
    ax.legend(
        handles=[
            plt.Line2D(
                [],
                [],
                linestyle="none",
                marker=OTHER_MARKER,
                markerfacecolor="white",
                markeredgecolor=colour,
                label="no exacerbation (6)",
            ),
            plt.Line2D(
                [],
                [],
                linestyle="none",
                marker=EXACERBATION_MARKER,
                color=colour,
                label="exacerbation under natalizumab (2)",
            ),
        ],
        fontsize=6,
        frameon=False,
        loc="upper center",
    )
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + 0.3 * (top - bottom))


def title_ratio_panel(ax, finding: str, findings, shown, table, ratios) -> None:
    subset = findings.loc[finding, "subset"]
    medians = ratios[ratios["subset"] == subset].groupby("group")["value"].median()
    p_value = float(frequentist_row(table, "mann_whitney", subset)["p_value"])
    detail = (
        f"median {medians[NAIVE_GROUP]:.1f} → {medians[TREATED_GROUP]:.1f}, "
        f"two-sided Mann–Whitney p = {p_value:.1g}"
    )
    ax.set_title(
        panel_title(finding, findings.loc[finding, "reported"], shown[finding], detail), fontsize=7
    )


def title_loss_panel(ax, findings, shown, measures) -> None:
    loss = 100 * relative_loss(measures)
    detail = "relative reduction " + ", ".join(f"{s} {v:.0f}%" for s, v in loss.items())
    ax.set_title(panel_title("R3", findings.loc["R3", "reported"], shown["R3"], detail), fontsize=7)


def title_exacerbation_panel(ax, findings, shown, table, ratios) -> None:
    rows = [frequentist_row(table, "exacerbation", s) for s in dict.fromkeys(ratios["subset"])]
    p_values = ", ".join(dict.fromkeys(f"{row['p_value']:.3f}" for row in rows))
    detail = (
        f"descriptive, Mann–Whitney p = {p_values}, the smallest attainable with 2 vs 6 being "
        f"{min(row['min_attainable_p'] for row in rows):.3f}"
    )
    ax.set_title(panel_title("R4", findings.loc["R4", "reported"], shown["R4"], detail), fontsize=7)


def suptitle(config_toml: Path) -> str:
    seed, log_or = cohort_choice(config_toml)
    return textwrap.fill(
        "A SIMULATED cohort with the study's design, not the study's data, chosen "
        f"(seed {seed}, exacerbation log OR {log_or:g} per SD of the latent log CD49d ratio) so "
        "that it shows R1–R4. Reported findings: Kimura et al. 2016 (directions only).",
        SUPTITLE_WIDTH,
    )


def figure(cohort_csv: Path, frequentist_csv: Path, findings_csv: Path, config_toml: Path):
    """The figure (not saved).

    Raises
    ------
    ValueError
        If the findings file lacks R1-R4, or ``frequentist.csv`` is not the cohort's.
    """
    findings = read_findings(findings_csv)
    cohort: Cohort = load_cohort(cohort_csv)
    measures = subject_measures(cohort)
    table = pd.read_csv(frequentist_csv)
    check_frequentist_matches(table, measures, frequentist_csv)
    shown = study_findings(cohort)
    ratios = measures[measures["quantity"] == RATIO]
    rng = np.random.default_rng(1)
    fig, axes = plt.subplots(2, 2, figsize=(DOUBLE_COLUMN_IN, 6.2), layout="constrained")
    for ax, finding in zip(axes[0], ("R1", "R2"), strict=True):
        draw_ratio_panel(ax, ratios[ratios["subset"] == findings.loc[finding, "subset"]], rng)
        title_ratio_panel(ax, finding, findings, shown, table, ratios)
    draw_loss_panel(axes[1, 0], measures)
    title_loss_panel(axes[1, 0], findings, shown, measures)
    draw_exacerbation_panel(axes[1, 1], ratios, rng)
    title_exacerbation_panel(axes[1, 1], findings, shown, table, ratios)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
    fig.suptitle(suptitle(config_toml), fontsize=7)
    return fig


def make(
    cohort_csv: Path, frequentist_csv: Path, findings_csv: Path, config_toml: Path, stem: Path
) -> list[Path]:
    """Draw the figure into ``stem.pdf`` and ``stem.png``; returns both paths."""
    fig = figure(cohort_csv, frequentist_csv, findings_csv, config_toml)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cohort", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("frequentist", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("findings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(cohort: Path, frequentist: Path, findings: Path, config: Path, stem: Path) -> None:
    """Draw the simulated COHORT against the study's FINDINGS into STEM.pdf and STEM.png.

    FREQUENTIST is the cohort's frequentist.csv (cd49d describe); CONFIG the cohort's
    configuration TOML (its seed and exacerbation log OR).
    """
    try:
        make(cohort, frequentist, findings, config, stem)
    except (ValueError, CohortFileError) as err:  # a malformed input file: no traceback
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    main()
