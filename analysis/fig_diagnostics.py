"""Figure S2 (MCMC diagnostics of the fits): rank plots of each model's key global parameters
and its energy plot, one row per model.

Rank plots (ArviZ ``plot_rank``): for each chain, the ECDF of the fractional ranks of its draws
among all chains' draws minus the uniform CDF; chains that sample the same posterior stay near
0. ``method="mtc_c"``, ArviZ's multi-chain uniformity test (Tesso et al. 2026), gives the p-value
printed in each panel and highlights the draws that contribute most to a deviation where p is
below 1 − ``ENVELOPE_PROB``. Energy plot (ArviZ ``plot_energy``, kernel density estimates): the
marginal energy and the energy transition distributions, centred; a transition distribution
much narrower than the marginal one means the sampler explores the energy levels slowly. Each
energy panel prints the E-BFMI of every chain (the gate requires at least 0.3) and the number of
divergent transitions. Reads ``fit.nc`` of each ``cd49d fit`` folder; never fits.

Usage: ``python -m analysis.fig_diagnostics FIT_NC... OUTPUT_STEM``
"""

from __future__ import annotations

from pathlib import Path

import arviz as az
import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from arviz_plots import PlotCollection, plot_energy, plot_rank
from matplotlib.lines import Line2D

from analysis.style import DOUBLE_COLUMN_IN, OKABE_ITO, save_figure

#: Global parameters whose rank plots are drawn, per model (those its posterior holds).
KEY_PARAMETERS = {
    "positive_rate": ["tau_subject", "tau_subject_subset"],
    "saturation": [
        "kappa",
        "saturation_mean",
        "saturation_logit_sd",
        "tau_subject",
        "tau_subject_subset",
    ],
    "saturation_per_subset": [
        "kappa_logit_mean",
        "kappa_logit_sd",
        "saturation_mean",
        "saturation_logit_sd",
        "tau_subject",
        "tau_subject_subset",
    ],
    "exacerbation": [
        "exacerbation_log_or",
        "kappa",
        "saturation_mean",
        "saturation_logit_sd",
        "tau_subject",
        "tau_subject_subset",
    ],
    "exacerbation_logit": ["exacerbation_log_or", "tau_subject", "tau_subject_subset"],
}
SAMPLE_DIMS = {"chain", "draw"}
#: Scalar posterior variables drawn for a model not listed above, at most this many.
DEFAULT_COUNT = 4
#: Passed to ``plot_rank``: highlight the draws behind a deviation where p < 1 - this.
ENVELOPE_PROB = 0.95
DENSITY_KIND = "kde"
#: One colour per chain (Okabe-Ito); energy: marginal and transition.
CHAIN_COLOURS = [
    OKABE_ITO[name] for name in ("blue", "orange", "bluish_green", "reddish_purple", "sky_blue")
]
ENERGY_COLOURS = {"marginal": OKABE_ITO["sky_blue"], "transition": OKABE_ITO["vermillion"]}
#: What the figure reads of each fit.
FIT_GROUPS = ("posterior", "sample_stats")
PANEL_HEIGHT_IN = 1.25
FONT_SIZE = 6
#: The energy panel is wider than a rank plot: its title lists every chain's E-BFMI.
ENERGY_WIDTH = 1.4


def read_fit(path: Path, groups: tuple[str, ...]) -> xr.DataTree:
    """The named groups of a ``fit.nc``, loaded into memory and the file closed (a file left
    open while it is opened again can crash the netCDF library)."""
    with xr.open_datatree(path) as tree:
        loaded = xr.DataTree.from_dict({group: tree[group].to_dataset().load() for group in groups})
        loaded.attrs = dict(tree.attrs)
    return loaded


def model_name(tree: xr.DataTree, path: Path) -> str:
    """The model a fit is of (its ``model`` attribute, else its folder's name)."""
    return str(tree.attrs.get("model", path.parent.name))


def key_parameters(model: str, posterior: xr.Dataset) -> list[str]:
    """The scalar global parameters drawn for a model, those its posterior holds."""
    scalar = [name for name, var in posterior.data_vars.items() if set(var.dims) <= SAMPLE_DIMS]
    if model in KEY_PARAMETERS:
        return [name for name in KEY_PARAMETERS[model] if name in scalar]
    return scalar[:DEFAULT_COUNT]


def collection_on(ax, data: xr.Dataset, aes: dict, **aes_values) -> PlotCollection:
    """An ArviZ plot collection that draws every variable of ``data`` on the one axes ``ax``.

    ``aes`` maps aesthetics to dimensions (``{"color": ["chain"]}``), ``aes_values`` gives their
    values. ArviZ reserves the first value of each list for elements the mapping does not
    reach, so the values that the mapping assigns start at the second.
    """
    viz = xr.DataTree(
        xr.Dataset(
            {
                "figure": np.array(ax.figure, dtype=object),
                "plot": np.array(ax, dtype=object),
                "row_index": 0,
                "col_index": 0,
            }
        )
    )
    return PlotCollection(data, viz, aes=aes, backend="matplotlib", **aes_values)


def draw_rank(ax, tree: xr.DataTree, name: str) -> None:
    """One parameter's rank plot, chains coloured, with the multi-chain test's p-value."""
    posterior = tree["posterior"].to_dataset()[[name]]
    chains = {"color": ["chain"], "overlay": ["chain"]}
    collection = collection_on(ax, posterior, chains, color=CHAIN_COLOURS)
    plot_rank(
        tree,
        var_names=[name],
        group="posterior",
        sample_dims=["chain", "draw"],
        method="mtc_c",
        envelope_prob=ENVELOPE_PROB,
        plot_collection=collection,
        visuals={
            "title": False,
            "xlabel": False,
            "ecdf_lines": {"width": 0.7},
        },
    )
    ax.set_title(name, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE - 1)
    # plot_rank takes no style for its p-value and highlighted draws (ArviZ 1.3): set here.
    for text in ax.texts:
        text.set_fontsize(FONT_SIZE - 1)
    for points in ax.collections:
        points.set_sizes([3])


def ebfmi_per_chain(tree: xr.DataTree) -> np.ndarray:
    """The E-BFMI of each chain (ArviZ), as the diagnostics gate computes it."""
    return np.atleast_1d(az.bfmi(tree)["energy"].values)


def draw_energy(ax, tree: xr.DataTree) -> None:
    """The energy plot, with each chain's E-BFMI and the number of divergent transitions."""
    levels = xr.Dataset(
        {"Energy": ("energy", np.zeros(2))}, coords={"energy": list(ENERGY_COLOURS)}
    )
    collection = collection_on(
        ax, levels, {"color": ["energy"]}, color=list(ENERGY_COLOURS.values())
    )
    plot_energy(
        tree,
        sample_dims=["chain", "draw"],
        kind=DENSITY_KIND,
        show_bfmi=False,
        plot_collection=collection,
        visuals={"legend": False, "title": False, "dist": {"width": 0.7}},
    )
    bfmi = " ".join(f"{value:.2f}" for value in ebfmi_per_chain(tree))
    divergences = int(tree["sample_stats"]["diverging"].sum())
    ax.set_title(f"energy\nE-BFMI {bfmi}\n{divergences} divergent", fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE - 1)


def draw_model(axes, tree: xr.DataTree, model: str) -> None:
    """One row: the key parameters' rank plots from the left, the energy plot last."""
    names = key_parameters(model, tree["posterior"].to_dataset())
    for ax, name in zip(axes[:-1], names, strict=False):
        draw_rank(ax, tree, name)
    for ax in axes[len(names) : -1]:
        ax.set_visible(False)
    draw_energy(axes[-1], tree)
    axes[0].set_ylabel(model, fontsize=FONT_SIZE + 1, fontweight="bold")
    axes[0].yaxis.set_visible(True)
    axes[0].set_yticks([])


def add_legend(fig, n_chains: int) -> None:
    """Chains' and energies' colours, once for the figure."""
    handles = [
        Line2D([], [], color=CHAIN_COLOURS[k % len(CHAIN_COLOURS)], lw=1, label=f"chain {k}")
        for k in range(n_chains)
    ]
    handles += [
        Line2D([], [], color=c, lw=4, label=f"{e} energy") for e, c in ENERGY_COLOURS.items()
    ]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=FONT_SIZE)


def draw(fit_paths: list[Path]) -> plt.Figure:
    """The figure: one row per fit, in the order given."""
    trees = [read_fit(path, FIT_GROUPS) for path in fit_paths]
    models = [model_name(tree, path) for tree, path in zip(trees, fit_paths, strict=True)]
    n_cols = 1 + max(
        len(key_parameters(m, t["posterior"].to_dataset()))
        for t, m in zip(trees, models, strict=True)
    )
    fig, axes = plt.subplots(
        len(trees),
        n_cols,
        figsize=(DOUBLE_COLUMN_IN, PANEL_HEIGHT_IN * len(trees) + 0.5),
        squeeze=False,
        layout="constrained",
        width_ratios=[1] * (n_cols - 1) + [ENERGY_WIDTH],
    )
    for row, tree, model in zip(axes, trees, models, strict=True):
        draw_model(row, tree, model)
    add_legend(fig, max(tree["posterior"].sizes["chain"] for tree in trees))
    fig.supxlabel("rank plots: fractional rank; energy: centred energy", fontsize=FONT_SIZE)
    return fig


def make(fit_paths: list[Path], stem: Path) -> list[Path]:
    """Draw the figure from the fits into ``stem.pdf`` and ``stem.png``."""
    fig = draw(fit_paths)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "fits", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
def main(fits: tuple[Path, ...], stem: Path) -> None:
    """Draw rank and energy plots of each of FITS (fit.nc of cd49d fit) into STEM.pdf/.png,
    one row per fit."""
    make(list(fits), stem)


if __name__ == "__main__":
    main()
