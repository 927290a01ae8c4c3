"""Figure S3 (what the data identify): prior and posterior densities of the occupancy
parameters and κ, one row per latent-expression model.

Each panel overlays the prior (the fit's ``prior`` group) and the posterior density (ArviZ
``plot_prior_posterior``, kernel density estimates) of one quantity: the population mean
occupancy (``saturation_mean``), its dispersion (``saturation_logit_sd``, SD of the logit
occupancy), the two treated patients with the lowest and the highest posterior mean occupancy,
and κ (shared, or one per subset in ``saturation_per_subset``). Each title gives the
contraction 1 − posterior variance / prior variance of ``identification.csv`` (written by
``cd49d fit``): near 1 the data identify the quantity, near 0 only the prior informs it. That
file lists global parameters only; a patient's contraction (marked *) is computed from the
fit's draws by the same function (``models.sensitivity.identification_table``). Reads
``fit.nc`` and ``identification.csv`` of each ``cd49d fit`` folder; never fits.

Usage: ``python -m analysis.fig_prior_posterior FIT_NC... OUTPUT_STEM``
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
import xarray as xr
from arviz_plots import plot_prior_posterior
from matplotlib.lines import Line2D

from analysis.fig_diagnostics import DENSITY_KIND, collection_on, model_name, read_fit
from analysis.style import DOUBLE_COLUMN_IN, OKABE_ITO, save_figure
from models.sensitivity import identification_table

GROUP_COLOURS = {"prior": OKABE_ITO["orange"], "posterior": OKABE_ITO["blue"]}
#: Treated patients shown per model: the lowest and the highest posterior mean occupancy.
PATIENT_VARIABLE = "saturation"
OCCUPANCY = ["saturation_mean", "saturation_logit_sd"]
KAPPA = "kappa"
LABELS = {
    "saturation_mean": "mean occupancy",
    "saturation_logit_sd": "occupancy SD (logit)",
    "saturation": "occupancy",
    "kappa": "κ",
}
PATIENT_MARK = "*"
#: What the figure reads of each fit.
FIT_GROUPS = ("prior", "posterior")
PANEL_HEIGHT_IN = 1.35
FONT_SIZE = 6


@dataclass(frozen=True)
class Panel:
    """One quantity: its variable, the coordinates that pick one element, its title."""

    variable: str
    coords: dict
    title: str


def contraction_text(value: float, *, computed: bool) -> str:
    """``contraction 0.03`` (``*`` where computed from the draws, not read from the file)."""
    return f"contraction {value:.2f}{PATIENT_MARK if computed else ''}"


def kappa_panels(tree: xr.DataTree, identification: pd.Series) -> list[Panel]:
    """κ, shared or one panel per subset."""
    kappa = tree["posterior"][KAPPA]
    if "subset" not in kappa.dims:
        text = contraction_text(identification[KAPPA], computed=False)
        return [Panel(KAPPA, {}, f"κ (shared)\n{text}")]
    return [
        Panel(
            KAPPA,
            {"subset": subset},
            f"κ {subset}\n{contraction_text(identification[f'{KAPPA}[{subset}]'], computed=False)}",
        )
        for subset in kappa["subset"].values
    ]


def patient_panels(tree: xr.DataTree) -> list[Panel]:
    """The treated patients with the lowest and the highest posterior mean occupancy."""
    occupancy = tree["posterior"][PATIENT_VARIABLE]
    dim = next(d for d in occupancy.dims if d not in ("chain", "draw"))
    means = occupancy.mean(("chain", "draw")).values
    chosen = [occupancy[dim].values[np.argmin(means)], occupancy[dim].values[np.argmax(means)]]
    contraction = identification_table(tree, [PATIENT_VARIABLE]).set_index("parameter")
    return [
        Panel(
            PATIENT_VARIABLE,
            {dim: patient},
            f"occupancy {patient}\n"
            + contraction_text(
                contraction.at[f"{PATIENT_VARIABLE}[{patient}]", "contraction"], computed=True
            ),
        )
        for patient in chosen
    ]


def panels_of(tree: xr.DataTree, identification: pd.Series) -> list[Panel]:
    """A model's panels: occupancy mean and SD, two patients, then κ.

    Raises
    ------
    ValueError
        If the fit has no occupancy (not a latent-expression model).
    """
    if PATIENT_VARIABLE not in tree["posterior"]:
        raise ValueError("the fit has no occupancy: choose a latent-expression model's fit")
    occupancy = [
        Panel(name, {}, f"{LABELS[name]}\n{contraction_text(identification[name], computed=False)}")
        for name in OCCUPANCY
    ]
    return occupancy + patient_panels(tree) + kappa_panels(tree, identification)


def read_identification(fit_path: Path) -> pd.Series:
    """Contraction per parameter from the ``identification.csv`` beside ``fit.nc``."""
    table = pd.read_csv(fit_path.parent / "identification.csv")
    return table.set_index("parameter")["contraction"]


def draw_panel(ax, tree: xr.DataTree, panel: Panel) -> None:
    """One quantity's prior and posterior densities."""
    groups = xr.Dataset(
        {panel.variable: ("group", np.zeros(2))}, coords={"group": list(GROUP_COLOURS)}
    )
    small = xr.DataTree.from_dict(
        {
            group: tree[group].to_dataset()[[panel.variable]].sel(panel.coords)
            for group in GROUP_COLOURS
        }
    )
    collection = collection_on(ax, groups, {"color": ["group"]}, color=list(GROUP_COLOURS.values()))
    plot_prior_posterior(
        small,
        var_names=[panel.variable],
        sample_dims=["chain", "draw"],
        kind=DENSITY_KIND,
        plot_collection=collection,
        visuals={"title": False, "dist": {"width": 0.9}},
    )
    # ArviZ 1.3 adds a figure legend per call and takes no option against it here: removed,
    # the figure gets one legend of its own.
    for legend in list(ax.figure.legends):
        legend.remove()
    ax.set_title(panel.title, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE - 1)


def draw_model(axes, tree: xr.DataTree, panels: list[Panel], model: str) -> None:
    """One row: each panel of the model from the left, the rest hidden."""
    for ax, panel in zip(axes, panels, strict=False):
        draw_panel(ax, tree, panel)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].yaxis.set_visible(True)
    axes[0].set_yticks([])
    axes[0].set_ylabel(model, fontsize=FONT_SIZE + 1, fontweight="bold")


def draw(fit_paths: list[Path]) -> plt.Figure:
    """The figure: one row per fit, in the order given."""
    trees = [read_fit(path, FIT_GROUPS) for path in fit_paths]
    rows = [
        panels_of(tree, read_identification(path))
        for tree, path in zip(trees, fit_paths, strict=True)
    ]
    n_cols = max(len(panels) for panels in rows)
    fig, axes = plt.subplots(
        len(trees),
        n_cols,
        figsize=(DOUBLE_COLUMN_IN, PANEL_HEIGHT_IN * len(trees) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for row, tree, panels, path in zip(axes, trees, rows, fit_paths, strict=True):
        draw_model(row, tree, panels, model_name(tree, path))
    handles = [Line2D([], [], color=c, lw=1.2, label=g) for g, c in GROUP_COLOURS.items()]
    fig.legend(handles=handles, loc="outside upper center", ncol=2, fontsize=FONT_SIZE)
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
    """Draw prior and posterior densities of the occupancy parameters and kappa of each of FITS
    (fit.nc of cd49d fit, identification.csv beside it) into STEM.pdf/.png, one row per fit."""
    make(list(fits), stem)


if __name__ == "__main__":
    main()
