"""Figure S1 (simulation-based calibration): rank-ECDF difference plots, one panel per model.

Each panel overlays a model's key quantities (its mechanism or effect parameters, the SDs of
the subject effects and the data's log-likelihood): the ECDF of the randomised fractional ranks
of the true values among the thinned posterior draws (``simulations.sbc_summary``) minus the
uniform CDF, inside the simultaneous 95% band of Sailynoja, Burkner & Vehtari (2022) (ArviZ's
``arviz_stats.ecdf_utils.ecdf_pit`` with the band probability passed explicitly, as
``analysis.fig_sbc`` draws it for one model). The band holds for each curve on its own, not for
all curves of a panel at once. The legend gives each quantity's p-value of the summary's gamma
test; a quantity that fails at the model's Bonferroni level is drawn dashed. Reads
``ranks.parquet`` and ``sbc_summary.csv`` of each ``cd49d sbc`` folder; never fits. Every
cohort behind these ranks is simulated from the prior: nothing here is study data.

Usage: ``python -m analysis.fig_sbc_ecdf SBC_DIR... OUTPUT_STEM``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from arviz_stats.ecdf_utils import ecdf_pit

from analysis.fig_sbc import BAND_COLOUR, BAND_SIMULATIONS
from analysis.style import DOUBLE_COLUMN_IN, OKABE_ITO, save_figure
from simulations.sbc_summary import BAND_PROB, randomised_pit

#: What each model's panel shows: mechanism or effect quantities first, then the subject-effect
#: SDs and the log-likelihood (the joint test quantity of Modrak et al. 2023).
KEY_QUANTITIES = {
    "positive_rate": [
        "ratio_fold_change[Th1]",
        "ratio_fold_change[Th17]",
        "tau_subject",
        "tau_subject_subset",
    ],
    "saturation": ["kappa", "saturation_mean", "mean_probit_shift", "sigma", "tau_subject_subset"],
    "saturation_per_subset": [
        "kappa_difference[Th1]",
        "kappa_difference[Th17]",
        "saturation_mean",
        "mean_probit_shift",
        "tau_subject_subset",
    ],
    "exacerbation": [
        "exacerbation_log_or",
        "kappa",
        "saturation_mean",
        "mean_probit_shift",
        "tau_subject",
    ],
    "exacerbation_logit": [
        "exacerbation_log_or",
        "ratio_fold_change[Th17]",
        "tau_subject",
        "tau_subject_subset",
    ],
}
LOG_LIKELIHOOD = "log_likelihood"
#: Quantities of a model not listed above: its first parameters, up to this many.
DEFAULT_COUNT = 4
#: One colour per curve of a panel (Okabe-Ito without yellow, which is unreadable on white);
#: the log-likelihood is always black.
CURVE_COLOURS = [
    OKABE_ITO[name]
    for name in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue")
]
N_COLS = 3
PANEL_HEIGHT_IN = 2.9


@dataclass(frozen=True)
class SbcRun:
    """One model's SBC output: ranks of the converged fits and the per-quantity summary."""

    model: str
    ranks: pd.DataFrame
    summary: pd.DataFrame


def read_run(folder: Path) -> SbcRun:
    """The ranks of the fits that passed the gate and the summary of one ``cd49d sbc`` folder."""
    ranks = pd.read_parquet(folder / "ranks.parquet")
    summary = pd.read_csv(folder / "sbc_summary.csv")
    return SbcRun(folder.name, ranks[ranks["status"] == "ok"], summary)


def key_quantities(run: SbcRun) -> list[str]:
    """The quantities drawn for a model, those its summary holds, log-likelihood last."""
    present = set(run.summary["quantity"])
    if run.model in KEY_QUANTITIES:
        chosen = [q for q in KEY_QUANTITIES[run.model] if q in present]
    else:
        parameters = run.summary.loc[run.summary["kind"] == "parameter", "quantity"]
        chosen = list(parameters[:DEFAULT_COUNT])
    return chosen + ([LOG_LIKELIHOOD] if LOG_LIKELIHOOD in present else [])


def ecdf_difference(ranks: np.ndarray, max_rank: int) -> tuple[np.ndarray, ...]:
    """ECDF of the randomised fractional ranks minus the uniform CDF, with the simultaneous band.

    Seeded as ``analysis.fig_sbc`` seeds it, so that the curves and bands are those of the
    SBC run's own plot.

    Returns
    -------
    tuple of numpy.ndarray
        ``(points, ecdf - points, lower band - points, upper band - points)``.
    """
    values = randomised_pit(ranks, max_rank, seed=len(ranks))
    points, ecdf, lower, upper = ecdf_pit(
        values, BAND_PROB, BAND_SIMULATIONS, rng=np.random.default_rng(len(values))
    )
    return points, ecdf - points, lower - points, upper - points


def draw_model(ax, run: SbcRun) -> None:
    """One model's panel: its key quantities' ECDF differences inside the simultaneous band.

    Raises
    ------
    ValueError
        If the key quantities have different numbers of ranks (one band would not fit them all).
    """
    quantities = key_quantities(run)
    by_quantity = run.summary.set_index("quantity")
    groups = {q: run.ranks.loc[run.ranks["quantity"] == q, "rank"].to_numpy() for q in quantities}
    if len({len(ranks) for ranks in groups.values()}) > 1:
        raise ValueError(f"{run.model}: the key quantities have different numbers of ranks")
    colours = iter(CURVE_COLOURS)
    for index, (quantity, ranks) in enumerate(groups.items()):
        row = by_quantity.loc[quantity]
        points, difference, lower, upper = ecdf_difference(ranks, int(row["max_rank"]))
        if index == 0:
            ax.fill_between(points, lower, upper, step="post", color=BAND_COLOUR, lw=0)
        ax.step(
            points,
            difference,
            where="post",
            color=OKABE_ITO["black"] if quantity == LOG_LIKELIHOOD else next(colours),
            lw=0.9,
            linestyle="-" if row["passes"] else "--",
            label=f"{quantity}  p = {row['p_value']:.2g}",
        )
    ax.axhline(0, color="#888888", lw=0.5)
    ax.set_title(panel_title(run), fontsize=6.5)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=5, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)


def panel_title(run: SbcRun) -> str:
    """The model, how many fits failed the gate, and how many of its quantities pass."""
    summary = run.summary
    failed, replicates = int(summary["failed_fits"].max()), int(summary["replicates"].max())
    passing = int(summary["passes"].sum())
    return (
        f"{run.model}\n{failed} of {replicates} fits failed the gate\n"
        f"{passing} of {len(summary)} quantities pass"
    )


def draw(folders: list[Path]) -> plt.Figure:
    """The figure: one panel per SBC folder, in the order given."""
    runs = [read_run(folder) for folder in folders]
    n_rows = -(-len(runs) // N_COLS)
    fig, axes = plt.subplots(
        n_rows,
        min(N_COLS, len(runs)),
        figsize=(DOUBLE_COLUMN_IN, PANEL_HEIGHT_IN * n_rows),
        squeeze=False,
        layout="constrained",
    )
    for ax, run in zip(axes.flat, runs, strict=False):
        draw_model(ax, run)
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("ECDF − uniform CDF", fontsize=7)
    fig.supxlabel(
        f"fractional rank of the true value (grey: simultaneous {BAND_PROB:.0%} band)", fontsize=7
    )
    return fig


def make(folders: list[Path], stem: Path) -> list[Path]:
    """Draw the figure from the ``cd49d sbc`` folders into ``stem.pdf`` and ``stem.png``."""
    fig = draw(folders)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "folders",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(folders: tuple[Path, ...], stem: Path) -> None:
    """Draw the SBC rank-ECDF differences of each model's FOLDERS (cd49d sbc --out) into
    STEM.pdf/.png, one panel per folder."""
    make(list(folders), stem)


if __name__ == "__main__":
    main()
