"""Supplementary figures S1 (SBC rank ECDFs), S2 (MCMC diagnostics) and S3 (prior vs posterior).

Each figure is drawn into tmp_path (PDF and PNG), and what it draws is read back from the
matplotlib artists and compared with its inputs: the SBC ranks and summaries (made here with
known calibration and summarised by ``simulations.sbc_summary``, as ``cd49d sbc`` does), and
the fixture fits of ``tests/data/results/fits`` (2 chains x 50 draws).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from matplotlib.collections import FillBetweenPolyCollection

from analysis import fig_diagnostics, fig_prior_posterior, fig_sbc_ecdf
from models.sensitivity import identification_table
from simulations.sbc_summary import summary_table

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "results"
FIXTURE_FITS = FIXTURE / "fits"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_RANK = 99
#: A quantity whose true values sit too low among the posterior draws: miscalibrated.
MISCALIBRATED = "kappa"


def assert_written(paths: list[Path], stem: Path) -> None:
    """``stem.pdf`` (a PDF) and ``stem.png`` (a PNG), both non-empty."""
    assert paths == [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    assert stem.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert stem.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE


def read_fit(path: Path) -> xr.DataTree:
    """The groups the figures read, loaded and the file closed."""
    return fig_diagnostics.read_fit(path, ("prior", "posterior", "sample_stats"))


def visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


# --- S1: SBC rank ECDFs ------------------------------------------------------------------------


def sbc_rows(model: str, rng: np.random.Generator, *, replicates=120, failed=15) -> pd.DataFrame:
    """Rank records as ``cd49d sbc`` writes them: uniform ranks, except ``MISCALIBRATED``,
    whose ranks pile up at the top; the first ``failed`` replicates failed the gate."""
    quantities = [*fig_sbc_ecdf.KEY_QUANTITIES[model], "pct_pos[HC, Th1]", "log_likelihood"]
    rows = []
    for replicate in range(replicates):
        ok = replicate >= failed
        for quantity in quantities:
            rank = rng.integers(0, MAX_RANK + 1)
            if quantity == MISCALIBRATED:
                rank = min(MAX_RANK, int(rank * 0.5) + 50)
            kind = "log_likelihood" if quantity == "log_likelihood" else "parameter"
            rows.append(
                {
                    "replicate": replicate,
                    "status": "ok" if ok else "not_converged",
                    "attempts": "batch",
                    "message": "",
                    "kind": kind,
                    "quantity": quantity,
                    "rank": rank if ok else np.nan,
                    "max_rank": MAX_RANK,
                    "true_value": rng.normal(),
                    "posterior_mean": 0.0,
                    "posterior_var": 1.0,
                    "posterior_iqr": rng.uniform(0.2, 1.2) if ok else np.nan,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sbc_folders(tmp_path_factory) -> list[Path]:
    """SBC folders of three models, with ranks.parquet and sbc_summary.csv."""
    root = tmp_path_factory.mktemp("sbc")
    rng = np.random.default_rng(20261126)
    folders = []
    for model in ("positive_rate", "saturation", "exacerbation"):
        rows = sbc_rows(model, rng)
        folder = root / model
        folder.mkdir()
        rows.to_parquet(folder / "ranks.parquet", index=False)
        summary_table(rows).to_csv(folder / "sbc_summary.csv", index=False)
        folders.append(folder)
    return folders


def test_sbc_figure_writes_pdf_and_png(sbc_folders, tmp_path):
    stem = tmp_path / "figS1_sbc"
    assert_written(fig_sbc_ecdf.make(sbc_folders, stem), stem)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_sbc_figure_draws_one_panel_per_model_given_in_order(sbc_folders, count):
    fig = fig_sbc_ecdf.draw(sbc_folders[:count])
    titles = [ax.get_title() for ax in visible_axes(fig)]
    assert [title.splitlines()[0] for title in titles] == [f.name for f in sbc_folders[:count]]
    plt.close(fig)


def test_sbc_panel_states_failed_fits_and_passing_quantities(sbc_folders):
    fig = fig_sbc_ecdf.draw(sbc_folders)
    for ax, folder in zip(visible_axes(fig), sbc_folders, strict=True):
        summary = pd.read_csv(folder / "sbc_summary.csv")
        _, failed, passing = ax.get_title().splitlines()
        assert failed == "15 of 120 fits failed the gate"
        assert passing == f"{int(summary['passes'].sum())} of {len(summary)} quantities pass"
    plt.close(fig)


def test_sbc_panel_draws_each_key_quantity_with_its_p_value(sbc_folders):
    fig = fig_sbc_ecdf.draw(sbc_folders)
    for ax, folder in zip(visible_axes(fig), sbc_folders, strict=True):
        summary = pd.read_csv(folder / "sbc_summary.csv").set_index("quantity")
        expected = [*fig_sbc_ecdf.KEY_QUANTITIES[folder.name], "log_likelihood"]
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert [label.split("  p = ")[0] for label in labels] == expected
        for label, quantity in zip(labels, expected, strict=True):
            assert float(label.split("  p = ")[1]) == pytest.approx(
                summary.at[quantity, "p_value"], rel=0.05
            )
    plt.close(fig)


def test_sbc_curves_leave_the_simultaneous_band_only_when_miscalibrated(sbc_folders):
    """The miscalibrated quantity fails (dashed) and leaves the band; clearly calibrated ones
    (p > 0.2) stay inside it; every curve starts and ends at 0."""
    fig = fig_sbc_ecdf.draw(sbc_folders[1:2])  # saturation: kappa is miscalibrated
    ax = visible_axes(fig)[0]
    band = next(c for c in ax.collections if isinstance(c, FillBetweenPolyCollection))
    summary = pd.read_csv(sbc_folders[1] / "sbc_summary.csv").set_index("quantity")
    curves = [line for line in ax.get_lines() if "  p = " in line.get_label()]
    assert len(curves) == len(fig_sbc_ecdf.KEY_QUANTITIES["saturation"]) + 1
    for line in curves:
        quantity = line.get_label().split("  p = ")[0]
        x, y = line.get_xdata(), line.get_ydata()
        assert y[0] == pytest.approx(0) and y[-1] == pytest.approx(0)
        middles = (x[:-1] + x[1:]) / 2  # a step curve holds y[i] on [x[i], x[i + 1])
        lower, upper = band_at(band, middles)
        outside = np.any((y[:-1] < lower - 1e-9) | (y[:-1] > upper + 1e-9))
        if quantity == MISCALIBRATED:
            assert outside and line.get_linestyle() == "--"
            assert not summary.at[quantity, "passes"]
        elif summary.at[quantity, "p_value"] > 0.2:
            assert not outside and line.get_linestyle() == "-"
    plt.close(fig)


def band_at(band, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest edge of a step-wise filled band above each of ``xs``."""
    vertices = band.get_paths()[0].vertices
    starts, ends = vertices[:-1], vertices[1:]
    flat = starts[:, 1] == ends[:, 1]
    left = np.minimum(starts[:, 0], ends[:, 0])[flat]
    right = np.maximum(starts[:, 0], ends[:, 0])[flat]
    heights = starts[flat, 1]
    spans = [heights[(left <= x) & (x <= right)] for x in xs]
    return np.array([h.min() for h in spans]), np.array([h.max() for h in spans])


def test_sbc_key_quantities_fall_back_to_the_first_parameters_of_an_unknown_model(sbc_folders):
    run = fig_sbc_ecdf.read_run(sbc_folders[0])
    unknown = fig_sbc_ecdf.SbcRun("another_model", run.ranks, run.summary)
    parameters = run.summary.loc[run.summary["kind"] == "parameter", "quantity"]
    assert fig_sbc_ecdf.key_quantities(unknown) == [
        *parameters[: fig_sbc_ecdf.DEFAULT_COUNT],
        "log_likelihood",
    ]


@pytest.mark.skipif(not (FIXTURE / "sbc").exists(), reason="fixture SBC tables not written yet")
def test_sbc_figure_draws_the_fixture_runs():
    folders = sorted(p.parent for p in (FIXTURE / "sbc").glob("*/ranks.parquet"))
    fig = fig_sbc_ecdf.draw(folders)
    assert [ax.get_title().splitlines()[0] for ax in visible_axes(fig)] == [f.name for f in folders]
    for ax in visible_axes(fig):
        assert len(ax.get_legend().get_texts()) >= 2
    plt.close(fig)


# --- S2: MCMC diagnostics ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_fits() -> list[Path]:
    return sorted(FIXTURE_FITS.glob("*/fit.nc"))


@pytest.fixture(scope="module")
def diagnostics_figure(fixture_fits):
    fig = fig_diagnostics.draw(fixture_fits)
    yield fig
    plt.close(fig)


def test_diagnostics_figure_writes_pdf_and_png(fixture_fits, tmp_path):
    stem = tmp_path / "figS2_diagnostics"
    assert_written(fig_diagnostics.make(fixture_fits[:1], stem), stem)


def diagnostics_rows(fig, n_fits: int) -> list[list]:
    """The figure's axes, row by row (visible ones only)."""
    per_row = len(fig.axes) // n_fits
    rows = [fig.axes[k * per_row : (k + 1) * per_row] for k in range(n_fits)]
    return [[ax for ax in row if ax.get_visible()] for row in rows]


def test_diagnostics_rows_hold_rank_plots_of_the_key_parameters_then_energy(
    diagnostics_figure, fixture_fits
):
    rows = diagnostics_rows(diagnostics_figure, len(fixture_fits))
    for row, path in zip(rows, fixture_fits, strict=True):
        tree = read_fit(path)
        model = tree.attrs["model"]
        expected = [
            name for name in fig_diagnostics.KEY_PARAMETERS[model] if name in tree["posterior"]
        ]
        assert expected, model
        assert [ax.get_title() for ax in row[:-1]] == expected
        assert row[0].get_ylabel() == model
        assert row[-1].get_title().startswith("energy")


def test_each_rank_plot_draws_one_curve_per_chain_in_its_colour(diagnostics_figure, fixture_fits):
    rows = diagnostics_rows(diagnostics_figure, len(fixture_fits))
    for row, path in zip(rows, fixture_fits, strict=True):
        n_chains = read_fit(path)["posterior"].sizes["chain"]
        for ax in row[:-1]:
            colours = [line.get_color() for line in ax.get_lines()]
            assert colours == fig_diagnostics.CHAIN_COLOURS[:n_chains]
            assert re.fullmatch(r"p=\d\.\d\d\(α=0\.05\) ?", ax.texts[0].get_text().strip() + " ")


def test_energy_panel_prints_each_chains_ebfmi_and_the_divergences(
    diagnostics_figure, fixture_fits
):
    rows = diagnostics_rows(diagnostics_figure, len(fixture_fits))
    for row, path in zip(rows, fixture_fits, strict=True):
        tree = read_fit(path)
        _, bfmi_line, divergent_line = row[-1].get_title().splitlines()
        printed = [float(v) for v in bfmi_line.removeprefix("E-BFMI ").split()]
        expected = az.bfmi(tree)["energy"].values
        assert printed == pytest.approx(expected, abs=0.005)
        assert len(printed) == tree["posterior"].sizes["chain"]
        assert divergent_line == f"{int(tree['sample_stats']['diverging'].sum())} divergent"
        assert len(row[-1].get_lines()) == 2  # marginal energy and energy transition


# --- S3: prior vs posterior --------------------------------------------------------------


OCCUPANCY_MODELS = ["saturation", "saturation_per_subset", "exacerbation"]


@pytest.fixture(scope="module")
def occupancy_fits(tmp_path_factory) -> list[Path]:
    """The fixture's latent-expression fits, each beside an ``identification.csv`` of distinct
    made-up contractions (so that a title can match its file's value only by reading it)."""
    root = tmp_path_factory.mktemp("fits")
    rng = np.random.default_rng(7)
    paths = []
    for model in OCCUPANCY_MODELS:
        source = FIXTURE_FITS / model / "fit.nc"
        if not source.exists():
            continue
        folder = root / model
        folder.mkdir()
        (folder / "fit.nc").symlink_to(source.resolve())
        tree = read_fit(source)
        names = ["saturation_mean", "saturation_logit_sd", "kappa", "tau_subject"]
        table = identification_table(tree, names)
        table["contraction"] = rng.permutation(np.linspace(-0.1, 0.95, len(table))).round(3)
        table.to_csv(folder / "identification.csv", index=False)
        paths.append(folder / "fit.nc")
    assert len(paths) >= 2
    return paths


@pytest.fixture(scope="module")
def prior_posterior_figure(occupancy_fits):
    fig = fig_prior_posterior.draw(occupancy_fits)
    yield fig
    plt.close(fig)


def test_prior_posterior_figure_writes_pdf_and_png(occupancy_fits, tmp_path):
    stem = tmp_path / "figS3_prior_posterior"
    assert_written(fig_prior_posterior.make(occupancy_fits[:1], stem), stem)


def panels_by_fit(fig, paths: list[Path]) -> dict[Path, list]:
    per_row = len(fig.axes) // len(paths)
    return {
        path: [ax for ax in fig.axes[k * per_row : (k + 1) * per_row] if ax.get_visible()]
        for k, path in enumerate(paths)
    }


def contraction_in(title: str) -> tuple[float, bool]:
    """The contraction a title prints, and whether it is marked as computed from the draws."""
    match = re.search(r"contraction (-?\d+\.\d\d)(\*?)$", title)
    assert match, title
    return float(match.group(1)), match.group(2) == "*"


def test_titles_print_the_contraction_of_identification_csv(prior_posterior_figure, occupancy_fits):
    for path, axes in panels_by_fit(prior_posterior_figure, occupancy_fits).items():
        table = pd.read_csv(path.parent / "identification.csv").set_index("parameter")
        tree = read_fit(path)
        kappa = tree["posterior"]["kappa"]
        kappas = (
            [f"kappa[{s}]" for s in kappa["subset"].values] if "subset" in kappa.dims else ["kappa"]
        )
        from_file = ["saturation_mean", "saturation_logit_sd", *kappas]
        titles = [ax.get_title() for ax in axes]
        file_titles = [t for t in titles if not contraction_in(t)[1]]
        assert len(file_titles) == len(from_file)
        for title, name in zip(file_titles, from_file, strict=True):
            assert contraction_in(title)[0] == pytest.approx(
                table.at[name, "contraction"], abs=0.005
            )


def test_patients_contraction_is_computed_from_the_fit_and_marked(
    prior_posterior_figure, occupancy_fits
):
    for path, axes in panels_by_fit(prior_posterior_figure, occupancy_fits).items():
        tree = read_fit(path)
        table = identification_table(tree, ["saturation"]).set_index("parameter")
        means = tree["posterior"]["saturation"].mean(("chain", "draw")).to_series()
        patients = [t for t in (ax.get_title() for ax in axes) if contraction_in(t)[1]]
        assert [t.splitlines()[0] for t in patients] == [
            f"occupancy {means.idxmin()}",
            f"occupancy {means.idxmax()}",
        ]
        for title, patient in zip(patients, [means.idxmin(), means.idxmax()], strict=True):
            value = table.at[f"saturation[{patient}]", "contraction"]
            assert contraction_in(title)[0] == pytest.approx(value, abs=0.005)


def test_each_panel_shows_a_prior_and_a_posterior_curve_of_its_own_draws(
    prior_posterior_figure, occupancy_fits
):
    """One curve per group, in its colour, spanning no more than that group's draws."""
    colours = fig_prior_posterior.GROUP_COLOURS
    for path, axes in panels_by_fit(prior_posterior_figure, occupancy_fits).items():
        tree = read_fit(path)
        for ax in axes:
            variable, coords = panel_quantity(ax.get_title(), tree)
            lines = ax.get_lines()
            assert sorted(line.get_color() for line in lines) == sorted(colours.values())
            for line in lines:
                group = next(g for g, c in colours.items() if c == line.get_color())
                draws = tree[group][variable].sel(coords).values
                x = line.get_xdata()
                assert draws.min() - 1e-9 <= x.min() and x.max() <= draws.max() + 1e-9


def panel_quantity(title: str, tree: xr.DataTree) -> tuple[str, dict]:
    """The variable and coordinates a panel draws, from its title."""
    head = title.splitlines()[0]
    if head.startswith("occupancy ") and head != "occupancy SD (logit)":
        return "saturation", {"treated_subject": head.removeprefix("occupancy ")}
    if head.startswith("κ "):
        subset = head.removeprefix("κ ")
        return "kappa", {} if subset == "(shared)" else {"subset": subset}
    return {"mean occupancy": "saturation_mean", "occupancy SD (logit)": "saturation_logit_sd"}[
        head
    ], {}


def test_a_fit_without_occupancy_is_refused(tmp_path):
    shutil.copy(FIXTURE_FITS / "positive_rate" / "fit.nc", tmp_path / "fit.nc")
    pd.DataFrame({"parameter": ["tau_subject"], "contraction": [0.9]}).to_csv(
        tmp_path / "identification.csv", index=False
    )
    with pytest.raises(ValueError, match="no occupancy"):
        fig_prior_posterior.draw([tmp_path / "fit.nc"])


@pytest.mark.parametrize("module", [fig_sbc_ecdf, fig_diagnostics, fig_prior_posterior])
def test_every_script_has_help(module):
    result = CliRunner().invoke(module.main, ["--help"])
    assert result.exit_code == 0
    assert "STEM" in result.output
