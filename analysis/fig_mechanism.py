"""Figure 2 (mechanism): what the latent-expression models say about how natalizumab acts.

(a) The population-average % CD49d+ of treated patients against receptor occupancy (60-100%),
    per subset, from the ``saturation`` fit (one kappa shared by all subsets): posterior median
    with 50% and 95% equal-tailed bands, computed draw by draw by the model's own ``pct_pos``
    graph with the occupancy distribution collapsed to a point mass (``RateAtOccupancy``);
    dashed: the untreated (MS_naive) population rate, posterior median. Log scale.
(b) Each treated patient's occupancy (``saturation``) and the population mean occupancy:
    posterior median, 50% and 95% equal-tailed intervals over the prior's 95% interval (grey);
    the model's range, 60-100%, marked.
(c) kappa, the fraction of detectable CD49d lost per unit occupancy: the shared kappa of
    ``saturation`` beside the per-subset kappas of ``saturation_per_subset``, with the same
    intervals and priors; the PSIS-LOO comparison of the two fits as text when given.
(d) kappa[Treg] - kappa[effector] (``saturation_per_subset``, the ``kappa_difference``
    estimand), with the same intervals and its prior.

Reads result files only; never fits. The cohort file is needed to rebuild the model's graph
(its coordinates); it must be the file the fits were made from.

Usage: ``python -m analysis.fig_mechanism COHORT_CSV SATURATION_FIT PER_SUBSET_FIT OUTPUT_STEM
[--loo LOO_CSV]`` (writes OUTPUT_STEM.pdf and OUTPUT_STEM.png)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr
from matplotlib.lines import Line2D
from pytensor.graph.replace import graph_replace, vectorize_graph
from pytensor.graph.traversal import ancestors
from pytensor.tensor.random.op import RandomVariable

from analysis.fit_files import read_fit
from analysis.style import DOUBLE_COLUMN_IN, INNER_PROB, SUBSET_COLOURS, save_figure
from models.data import Cohort, load_cohort
from models.estimands import CI_PROB, estimand_draws
from models.priors import SATURATION_FLOOR, SATURATION_SPAN
from models.registry import MODELS
from models.schema import NAIVE_GROUP, TREATED_GROUP

#: Occupancies at which panel (a) evaluates the rate (the model's range, 0.6 to 1).
OCCUPANCY_GRID = np.linspace(SATURATION_FLOOR, 1.0, 41)
SAMPLE_DIMS = ("chain", "draw")
PRIOR_COLOUR = "#D9D9D9"
SHARED_COLOUR = "#000000"
FONT_SIZE = 7


# --- the model's positive rate at a fixed occupancy ---------------------------------------------


@dataclass(frozen=True)
class RateAtOccupancy:
    """The population-average positive rate of treated patients at one occupancy, per subset.

    It is the model's own ``pct_pos[MS_NTZ]`` graph with the population occupancy distribution
    collapsed to a point mass at the given occupancy (``saturation_logit_sd`` = 0 and
    ``saturation_logit_mean`` = the occupancy's logit) and with ``sigma`` and ``kappa`` taken
    from the posterior rather than recomputed (``sigma`` is derived from the occupancy
    distribution of the draw). Compiled once, vectorised over posterior draws.
    """

    function: pytensor.compile.function.types.Function
    parameters: tuple[str, ...]
    subsets: tuple[str, ...]

    def __call__(self, draws: xr.Dataset, occupancy: np.ndarray) -> np.ndarray:
        """Rates (fractions), shape (sample, subset), at ``occupancy`` (one value per sample).

        ``draws`` has a single sample dim ``sample`` (e.g. ``posterior.stack(sample=...)``).
        """
        values = [draws[name].transpose("sample", ...).to_numpy() for name in self.parameters]
        return self.function(np.asarray(occupancy, dtype="float64"), *values)


def rate_at_occupancy(model: pm.Model) -> RateAtOccupancy:
    """Compile ``RateAtOccupancy`` from a latent-expression model (``saturation`` models).

    Raises
    ------
    ValueError
        If the model has no logit-normal occupancy (e.g. the uniform-occupancy prior set).
    """
    if "saturation_logit_mean" not in model.named_vars:
        raise ValueError("the model has no logit-normal occupancy: fit the default prior set")
    occupancy = pt.dscalar("occupancy")
    rate, inputs = point_mass_rate_graph(model, occupancy)
    batched = {
        x: pt.tensor(name, dtype=x.dtype, shape=(None, *x.type.shape)) for name, x in inputs.items()
    }
    batched_occupancy = pt.dvector("occupancy")
    output = vectorize_graph(rate, {occupancy: batched_occupancy, **batched})
    function = pytensor.function([batched_occupancy, *batched.values()], output)
    return RateAtOccupancy(function, tuple(inputs), tuple(model.coords["subset"]))


def point_mass_rate_graph(model: pm.Model, occupancy: pt.TensorVariable):
    """``pct_pos[MS_NTZ]`` as a graph of ``occupancy`` and of the posterior quantities it needs.

    Returns
    -------
    tuple
        The rate (subset,) and a dict of its other inputs, keyed by the model variable's name.
    """
    unit = pt.clip((occupancy - SATURATION_FLOOR) / SATURATION_SPAN, 0.0, 1.0)
    replacements = {
        model["saturation_logit_mean"]: pt.log(unit) - pt.log1p(-unit),
        model["saturation_logit_sd"]: pt.constant(0.0, dtype="float64"),
    }
    inputs = {name: model[name].type(name) for name in ("sigma", "kappa")}
    replacements |= {model[name]: x for name, x in inputs.items()}
    treated = list(model.coords["group"]).index(TREATED_GROUP)
    rate = graph_replace(model["pct_pos"][treated], replacements, strict=False)
    names = {variable: name for name, variable in model.named_vars.items()}
    remaining = {names[a]: a for a in ancestors([rate]) if a in names and a not in inputs.values()}
    inputs |= {name: variable.type(name) for name, variable in remaining.items()}
    rate = graph_replace(rate, {v: inputs[n] for n, v in remaining.items()}, strict=False)
    used = set(ancestors([rate]))
    if any(isinstance(getattr(v.owner, "op", None), RandomVariable) for v in used):
        raise ValueError("the treated rate still depends on a random variable of the model")
    return rate, {name: x for name, x in inputs.items() if x in used}


def rate_curves(rate: RateAtOccupancy, posterior: xr.Dataset, grid: np.ndarray) -> xr.DataArray:
    """% CD49d+ of treated patients at each occupancy of ``grid``, draw by draw.

    Returns
    -------
    xarray.DataArray
        Dims ``(sample, occupancy, subset)``, in percent.
    """
    draws = posterior[list(rate.parameters)].stack(sample=SAMPLE_DIMS)
    n_samples = draws.sizes["sample"]
    values = np.stack([rate(draws, np.full(n_samples, value)) for value in grid], axis=1)
    return xr.DataArray(
        100 * values,
        dims=("sample", "occupancy", "subset"),
        coords={"occupancy": grid, "subset": list(rate.subsets)},
    )


# --- reading the fits ----------------------------------------------------------------------------


def check_same_cohort(fit: xr.DataTree, cohort_csv: Path) -> None:
    """Refuse a cohort file other than the one the fit was made from (by SHA-256).

    Raises
    ------
    click.BadParameter
        If the fit records a different input file.
    """
    recorded = fit.attrs.get("input_cohort_sha256")
    actual = hashlib.sha256(Path(cohort_csv).read_bytes()).hexdigest()
    if recorded is not None and recorded != actual:
        raise click.BadParameter(
            f"{cohort_csv} is not the cohort the fit {fit.attrs.get('model')} was made from"
        )


def fit_model(fit: xr.DataTree, cohort: Cohort) -> pm.Model:
    """The fitted model's graph, rebuilt from its name and prior set (never sampled)."""
    return MODELS[str(fit.attrs["model"])].build(cohort, str(fit.attrs.get("prior_set", "default")))


def eti(values: xr.DataArray, prob: float) -> np.ndarray:
    """Equal-tailed interval ``[lower, upper]`` of scalar draws at ``prob``."""
    return az.eti(values, prob=prob, dim=list(SAMPLE_DIMS)).to_numpy()


def interval_rows(
    draws: dict[str, xr.DataArray], prior: dict[str, xr.DataArray] | None = None
) -> pd.DataFrame:
    """Median, 50% and 95% equal-tailed intervals of scalar draws, one row per label; with
    ``prior`` (same labels), the prior's 95% interval as well."""
    rows = pd.DataFrame(
        {
            "label": list(draws),
            "median": [float(v.median(dim=list(SAMPLE_DIMS))) for v in draws.values()],
            "inner": [eti(v, INNER_PROB) for v in draws.values()],
            "outer": [eti(v, CI_PROB) for v in draws.values()],
        }
    )
    if prior is not None:
        rows["prior"] = [eti(prior[label], CI_PROB) for label in draws]
    return rows


def group_of(fit: xr.DataTree, name: str) -> xr.Dataset | None:
    """A group of the fit (``posterior``, ``prior``), or None where the fit has none."""
    return fit[name].to_dataset() if name in fit.children else None


# --- drawing ------------------------------------------------------------------------------------


def draw_rate_curves(ax, curves: xr.DataArray, naive: xr.DataArray) -> None:
    """Panel (a): per subset the median curve, 50% and 95% bands, and the untreated rate."""
    percent = 100 * curves["occupancy"].to_numpy()
    inner = az.eti(curves, prob=INNER_PROB, dim="sample")
    outer = az.eti(curves, prob=CI_PROB, dim="sample")
    median = curves.median("sample")
    for subset in curves["subset"].to_numpy():
        colour = SUBSET_COLOURS.get(str(subset), SHARED_COLOUR)
        for band, alpha, prob in ((outer, 0.18, CI_PROB), (inner, 0.35, INNER_PROB)):
            low, high = (band.sel(subset=subset, ci_bound=b) for b in ("lower", "upper"))
            fill = ax.fill_between(percent, low, high, color=colour, alpha=alpha, linewidth=0)
            fill.set_gid(f"band:{subset}:{prob:g}")
        (line,) = ax.plot(percent, median.sel(subset=subset), color=colour, lw=1.2, label=subset)
        line.set_gid(f"median:{subset}")
        untreated = float(naive.sel(subset=subset).median())
        ax.axhline(untreated, color=colour, lw=0.8, ls="--").set_gid(f"untreated:{subset}")
    ax.set_yscale("log")
    ax.set_yticks([1, 2, 5, 10, 20, 50, 100], ["1", "2", "5", "10", "20", "50", "100"])
    ax.set_ylim(0.3, 100)  # room for the legend below the Treg curve
    ax.set_xlim(percent[0], percent[-1])
    ax.set_xlabel("Receptor occupancy (%)")
    ax.set_ylabel("% CD49d+ (population average)")
    ax.plot([], [], color="grey", lw=0.8, ls="--", label="untreated (MS_naive), median")
    for prob, alpha in ((INNER_PROB, 0.5), (CI_PROB, 0.2)):
        ax.fill_between([], [], [], color="grey", alpha=alpha, lw=0, label=f"{prob:.0%} band")
    ax.legend(fontsize=FONT_SIZE - 1, frameon=False, loc="lower left", ncols=3)


def draw_intervals(ax, rows: pd.DataFrame, *, scale: float = 1.0) -> None:
    """Rows of intervals (colour from ``rows["colour"]``): prior 95% (grey, where given),
    posterior 95% (thin) and 50% (thick), posterior median (open circle)."""
    for y, row in enumerate(rows.itertuples()):
        if "prior" in rows.columns:
            ax.plot(scale * row.prior, [y, y], color=PRIOR_COLOUR, lw=6, solid_capstyle="butt")
        (outer,) = ax.plot(scale * row.outer, [y, y], color=row.colour, lw=1)
        outer.set_gid(f"outer:{row.label}")
        ax.plot(scale * row.inner, [y, y], color=row.colour, lw=3, solid_capstyle="butt")
        ax.plot(scale * row.median, y, "o", color="white", mec=row.colour, ms=3.5, mew=1)
    ax.set_yticks(range(len(rows)), rows["label"])
    ax.set_ylim(len(rows) - 0.5, -0.5)


def interval_legend(fig) -> None:
    """The key to ``draw_intervals`` below the figure: prior 95%, posterior 95% and 50%,
    median."""
    handles = [
        Line2D([], [], color=PRIOR_COLOUR, lw=6, label=f"prior, {CI_PROB:.0%} interval"),
        Line2D([], [], color="black", lw=1, label=f"posterior, {CI_PROB:.0%} interval"),
        Line2D([], [], color="black", lw=3, label=f"posterior, {INNER_PROB:.0%} interval"),
        Line2D([], [], ls="", marker="o", color="white", mec="black", ms=3.5, label="median"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=4,
        frameon=False,
        fontsize=FONT_SIZE - 1,
        title="(b)-(d): equal-tailed intervals",
        title_fontsize=FONT_SIZE - 1,
    )


def occupancy_rows(fit: xr.DataTree) -> pd.DataFrame:
    """Panel (b)'s rows: each treated patient's occupancy, then the population mean."""

    def draws(group: xr.Dataset) -> dict[str, xr.DataArray]:
        values = {
            str(s): group["saturation"].sel(treated_subject=s)
            for s in group["treated_subject"].to_numpy()
        }
        return values | {"population mean": group["saturation_mean"]}

    prior = group_of(fit, "prior")
    rows = interval_rows(draws(group_of(fit, "posterior")), None if prior is None else draws(prior))
    return rows.assign(colour=SHARED_COLOUR)


def draw_occupancy(ax, rows: pd.DataFrame) -> None:
    """Panel (b): occupancy intervals per patient with the model's 60-100% range marked."""
    draw_intervals(ax, rows, scale=100)
    low, high = 100 * SATURATION_FLOOR, 100.0
    for edge in (low, high):
        ax.axvline(edge, color="grey", lw=0.6, ls=":")
    ax.axvspan(low - 10, low, color="#F2F2F2", zorder=0)
    ax.set_xlim(low - 5, high + 2)
    ax.set_xlabel("Receptor occupancy (%), model range 60-100%")


def kappa_rows(shared: xr.DataTree, per_subset: xr.DataTree) -> pd.DataFrame:
    """Panel (c)'s rows: the shared kappa, then one kappa per subset."""

    def draws(group: str) -> dict[str, xr.DataArray] | None:
        if group_of(shared, group) is None or group_of(per_subset, group) is None:
            return None
        kappa = per_subset[group].to_dataset()["kappa"]
        values = {"shared κ": shared[group].to_dataset()["kappa"]}
        return values | {f"κ {s}": kappa.sel(subset=s) for s in kappa["subset"].to_numpy()}

    rows = interval_rows(draws("posterior"), draws("prior"))
    colours = [
        SUBSET_COLOURS.get(label.removeprefix("κ "), SHARED_COLOUR) for label in rows["label"]
    ]
    return rows.assign(colour=colours)


def kappa_difference_rows(per_subset: xr.DataTree, cohort: Cohort) -> pd.DataFrame:
    """Panel (d)'s rows: kappa[Treg] - kappa[effector], the model's ``kappa_difference``."""
    reference = cohort.spec.reference_subset

    def draws(group: str) -> dict[str, xr.DataArray] | None:
        if group_of(per_subset, group) is None:
            return None
        difference = estimand_draws(group_of(per_subset, group), cohort.spec)["kappa_difference"]
        return {str(s): difference.sel(subset=s) for s in difference["subset"].to_numpy()}

    rows = interval_rows(draws("posterior"), draws("prior"))
    colours = [SUBSET_COLOURS[s] for s in rows["label"]]
    labels = [f"κ {reference} − κ {s}" for s in rows["label"]]
    return rows.assign(colour=colours, label=labels)


def loo_text(loo_csv: Path, n_observations: int) -> str:
    """The PSIS-LOO comparison of the two fits as lines of text."""
    table = pd.read_csv(loo_csv)
    lines = ["PSIS-LOO: elpd (SE), difference to the best (SE)"]
    for row in table.to_dict("records"):
        lines.append(
            f"{row['model']}: {row['elpd']:.1f} ({row['se']:.1f}), "
            f"{row['elpd_diff']:.1f} ({row['dse']:.1f})"
        )
    if "n_pareto_k_above_0.7" in table.columns:
        counts = " and ".join(str(int(k)) for k in table["n_pareto_k_above_0.7"])
        lines.append(f"Pareto k > 0.7 for {counts} of {n_observations} counts")
    return "\n".join(lines)


def draw_kappas(ax, rows: pd.DataFrame, loo: str | None) -> None:
    """Panel (c): shared and per-subset kappa, the LOO comparison below them where given."""
    draw_intervals(ax, rows)
    ax.set_xlim(0, 1)
    ax.set_xlabel("κ: detectable CD49d lost per unit occupancy")
    if loo is not None:
        ax.set_ylim(len(rows) + 0.5, -0.5)
        text = ax.text(0.02, 0.03, loo, transform=ax.transAxes, fontsize=FONT_SIZE - 1.5)
        text.set_gid("loo")


def draw_kappa_differences(ax, rows: pd.DataFrame) -> None:
    """Panel (d): kappa[Treg] - kappa[effector] in the per-subset model, 0 marked."""
    draw_intervals(ax, rows)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("κ difference, per-subset κ model")


def build_figure(
    cohort_csv: Path, saturation_fit: Path, per_subset_fit: Path, loo_csv: Path | None = None
):
    """Draw the four panels; returns the figure."""
    shared, per_subset = read_fit(saturation_fit), read_fit(per_subset_fit)
    for fit in (shared, per_subset):
        check_same_cohort(fit, cohort_csv)
    cohort = load_cohort(cohort_csv)
    posterior = group_of(shared, "posterior")
    curves = rate_curves(rate_at_occupancy(fit_model(shared, cohort)), posterior, OCCUPANCY_GRID)
    n_observations = shared["observed_data"].to_dataset()["n_cd49d_pos"].size
    loo = None if loo_csv is None else loo_text(loo_csv, n_observations)
    with plt.rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1}):
        fig = plt.figure(figsize=(DOUBLE_COLUMN_IN, 5.2), layout="constrained")
        grid = fig.add_gridspec(2, 2, width_ratios=(1.2, 1))
        axes = {key: fig.add_subplot(grid[i // 2, i % 2]) for i, key in enumerate("abcd")}
        draw_rate_curves(axes["a"], curves, 100 * posterior["pct_pos"].sel(group=NAIVE_GROUP))
        draw_occupancy(axes["b"], occupancy_rows(shared))
        draw_kappas(axes["c"], kappa_rows(shared, per_subset), loo)
        draw_kappa_differences(axes["d"], kappa_difference_rows(per_subset, cohort))
        for key, ax in axes.items():
            ax.set_title(f"({key})", loc="left", fontweight="bold")
        interval_legend(fig)
    return fig


def make(
    cohort_csv: Path,
    saturation_fit: Path,
    per_subset_fit: Path,
    stem: Path,
    *,
    loo_csv: Path | None = None,
) -> list[Path]:
    """Draw the figure into ``stem.pdf`` and ``stem.png``; returns both paths."""
    fig = build_figure(cohort_csv, saturation_fit, per_subset_fit, loo_csv)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cohort", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("saturation_fit", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("per_subset_fit", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--loo",
    "loo_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="loo_kappa.csv: the PSIS-LOO comparison of the two fits, written into panel (c).",
)
def main(
    cohort: Path, saturation_fit: Path, per_subset_fit: Path, stem: Path, loo_csv: Path | None
) -> None:
    """Draw Figure 2 (mechanism) from the two saturation fits into STEM.pdf and STEM.png."""
    make(cohort, saturation_fit, per_subset_fit, stem, loo_csv=loo_csv)


if __name__ == "__main__":
    main()
