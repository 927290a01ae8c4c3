"""Figures 2 (mechanism) and 3 (CD49d ratios), drawn from the small result tree of
``tests/data/results/`` (fits thinned to 2 chains x 50 draws, on the bundled simulated cohort).

The checks read back what was drawn and compare it with quantities computed here independently
(from the cohort file's counts, the fits' draws and the model's own ``pct_pos``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from analysis import fig_mechanism, fig_ratios
from analysis.fit_files import read_fit
from models.data import load_cohort
from models.priors import SATURATION_FLOOR, SATURATION_SPAN
from models.saturation import HERMITE_NODES, HERMITE_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
COHORT = ROOT / "data" / "kimura2016_simulated.csv"
FITS = ROOT / "tests" / "data" / "results" / "fits"
SATURATION_FIT = FITS / "saturation" / "fit.nc"
PER_SUBSET_FIT = FITS / "saturation_per_subset" / "fit.nc"
EXACERBATION_FIT = FITS / "exacerbation" / "fit.nc"
LATENT_MODELS = ("saturation", "saturation_per_subset", "exacerbation")
ESTIMANDS = [FITS / "positive_rate" / "estimands.csv", FITS / "saturation" / "estimands.csv"]
LOO_ROWS = pd.DataFrame(
    {
        "model": ["saturation", "saturation_per_subset"],
        "rank": [0, 1],
        "elpd": [-812.3, -813.0],
        "p": [95.2, 96.1],
        "elpd_diff": [0.0, -0.7],
        "weight": [0.7, 0.3],
        "se": [12.1, 12.2],
        "dse": [0.0, 1.1],
        "n_pareto_k_above_0.7": [131, 133],
    }
)


def is_pdf(path: Path) -> bool:
    return path.read_bytes()[:4] == b"%PDF"


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def gid_artists(fig, prefix: str) -> dict[str, object]:
    """Every artist of the figure whose gid starts with ``prefix``, keyed by gid."""
    found = {}
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.collections, *ax.texts]:
            gid = artist.get_gid()
            if gid and gid.startswith(prefix):
                found[gid] = artist
    return found


# --- Figure 2: the model's rate at a fixed occupancy -----------------------------------------


@pytest.fixture(scope="module", params=LATENT_MODELS)
def latent_fit(request):
    """``(rate function, posterior draws stacked over chain and draw)`` of a latent fit."""
    fit = read_fit(FITS / request.param / "fit.nc")
    rate = fig_mechanism.rate_at_occupancy(fig_mechanism.fit_model(fit, load_cohort(COHORT)))
    return rate, fit["posterior"].to_dataset().stack(sample=("chain", "draw"))


def test_the_rate_averaged_over_each_draws_occupancy_distribution_is_the_models_pct_pos(
    latent_fit,
):
    # The population occupancy at the model's quadrature nodes, restated here on purpose.
    rate, draws = latent_fit
    nodes = SATURATION_FLOOR + SATURATION_SPAN * expit(
        draws["saturation_logit_mean"].to_numpy()[:, None]
        + draws["saturation_logit_sd"].to_numpy()[:, None] * HERMITE_NODES
    )
    averaged = sum(w * rate(draws, nodes[:, k]) for k, w in enumerate(HERMITE_WEIGHTS))
    treated = draws["pct_pos"].sel(group="MS_NTZ").transpose("sample", "subset").to_numpy()
    np.testing.assert_allclose(averaged, treated, rtol=1e-9)


def test_the_rate_falls_with_occupancy_in_every_draw(latent_fit):
    rate, draws = latent_fit
    assert (draws["kappa"] > 0).all()
    curves = fig_mechanism.rate_curves(rate, draws.unstack("sample"), fig_mechanism.OCCUPANCY_GRID)
    assert (curves.diff("occupancy") < 0).all()
    assert curves.sizes["sample"] == draws.sizes["sample"]


def test_without_loss_the_rate_at_any_occupancy_is_the_untreated_rate(latent_fit):
    rate, draws = latent_fit
    no_loss = draws.copy(deep=True)
    no_loss["kappa"].values[...] = 0.0
    untreated = draws["pct_pos"].sel(group="MS_naive").transpose("sample", "subset").to_numpy()
    for occupancy in (SATURATION_FLOOR, 0.8, 1.0):
        at = rate(no_loss, np.full(draws.sizes["sample"], occupancy))
        np.testing.assert_allclose(at, untreated, rtol=1e-9)


def test_a_cohort_other_than_the_fits_is_refused(tmp_path):
    edited = tmp_path / "cohort.csv"
    shutil.copy(COHORT, edited)
    edited.write_text(edited.read_text().replace("85.23", "85.24"))
    with pytest.raises(click.BadParameter, match="not the cohort"):
        fig_mechanism.check_same_cohort(read_fit(PER_SUBSET_FIT), edited)


# --- Figure 2: the drawing --------------------------------------------------------------------


@pytest.fixture(scope="module")
def figure_2(tmp_path_factory):
    loo = tmp_path_factory.mktemp("loo") / "loo_kappa.csv"
    LOO_ROWS.to_csv(loo, index=False)
    fig = fig_mechanism.build_figure(COHORT, SATURATION_FIT, PER_SUBSET_FIT, loo)
    yield fig
    plt.close(fig)


def test_figure_2_writes_a_pdf_and_a_png(tmp_path):
    paths = fig_mechanism.make(COHORT, SATURATION_FIT, PER_SUBSET_FIT, tmp_path / "fig2")
    assert [p.name for p in paths] == ["fig2.pdf", "fig2.png"]
    assert is_pdf(paths[0]) and is_png(paths[1])


def test_figure_2_draws_each_subsets_posterior_median_curve_inside_its_bands(figure_2):
    fit = read_fit(SATURATION_FIT)
    rate = fig_mechanism.rate_at_occupancy(fig_mechanism.fit_model(fit, load_cohort(COHORT)))
    curves = fig_mechanism.rate_curves(
        rate, fit["posterior"].to_dataset(), fig_mechanism.OCCUPANCY_GRID
    )
    medians = gid_artists(figure_2, "median:")
    assert sorted(medians) == ["median:Th1", "median:Th17", "median:Treg"]
    for gid, line in medians.items():
        subset = gid.split(":")[1]
        x, y = line.get_data()
        np.testing.assert_allclose(x, 100 * fig_mechanism.OCCUPANCY_GRID)
        np.testing.assert_allclose(y, curves.sel(subset=subset).median("sample"))
        for prob in ("0.5", "0.95"):
            band = gid_artists(figure_2, f"band:{subset}:{prob}")[f"band:{subset}:{prob}"]
            vertices = band.get_paths()[0].vertices
            assert vertices[:, 1].min() <= y.min() and y.max() <= vertices[:, 1].max()


def test_figure_2_gives_each_treated_patient_an_occupancy_interval_inside_the_model_range(
    figure_2,
):
    patients = read_fit(SATURATION_FIT)["posterior"]["treated_subject"].to_numpy()
    intervals = gid_artists(figure_2, "outer:")
    for patient in [*patients, "population mean"]:
        low, high = intervals[f"outer:{patient}"].get_xdata()
        assert 100 * SATURATION_FLOOR <= low < high <= 100


def test_figure_2_compares_the_shared_kappa_with_one_per_subset_and_their_differences(figure_2):
    intervals = gid_artists(figure_2, "outer:")
    kappa = read_fit(PER_SUBSET_FIT)["posterior"]["kappa"]
    for subset in ("Th1", "Th17", "Treg"):
        low, high = intervals[f"outer:κ {subset}"].get_xdata()
        draws = kappa.sel(subset=subset).to_numpy().ravel()
        np.testing.assert_allclose([low, high], np.quantile(draws, [0.025, 0.975]))
    assert "outer:shared κ" in intervals
    difference = kappa.sel(subset="Treg") - kappa.sel(subset="Th17")
    low, high = intervals["outer:κ Treg − κ Th17"].get_xdata()
    np.testing.assert_allclose([low, high], np.quantile(difference, [0.025, 0.975]))


def test_figure_2_writes_the_loo_comparison_into_panel_c(figure_2):
    (text,) = gid_artists(figure_2, "loo").values()
    assert "saturation_per_subset: -813.0 (12.2), -0.7 (1.1)" in text.get_text()
    assert "131 and 133 of 150" in text.get_text()


# --- Figure 3 ----------------------------------------------------------------------------------


def ratios_from_counts() -> pd.DataFrame:
    """Each subject's CD49d ratios, computed here from the counts (wide: one column per ratio)."""
    rows = pd.read_csv(COHORT)
    rate = (rows["n_cd49d_pos"] / rows["n_cells"]).where(
        rows["n_cells"].notna(), rows["pct_cd49d_pos"] / 100
    )
    wide = rows.assign(rate=rate).pivot(index="subject_id", columns="subset", values="rate")
    subjects = rows.groupby("subject_id")[["group", "exacerbation"]].first()
    return subjects.assign(
        **{"Th1/Treg": wide["Th1"] / wide["Treg"], "Th17/Treg": wide["Th17"] / wide["Treg"]}
    )


@pytest.fixture(scope="module")
def figure_3():
    fig = fig_ratios.build_figure(COHORT, ESTIMANDS, EXACERBATION_FIT)
    yield fig
    plt.close(fig)


def test_figure_3_writes_a_pdf_and_a_png(tmp_path):
    paths = fig_ratios.make(COHORT, ESTIMANDS, EXACERBATION_FIT, tmp_path / "fig3")
    assert [p.name for p in paths] == ["fig3.pdf", "fig3.png"]
    assert is_pdf(paths[0]) and is_png(paths[1])


@pytest.mark.parametrize("ratio", ["Th1/Treg", "Th17/Treg"])
def test_figure_3_draws_one_point_per_subject_at_its_ratio(figure_3, ratio):
    expected = ratios_from_counts()
    for group, subjects in expected.groupby("group"):
        points = gid_artists(figure_3, f"subjects:{ratio}:{group}")[f"subjects:{ratio}:{group}"]
        drawn = np.sort(points.get_offsets()[:, 1])
        np.testing.assert_allclose(drawn, np.sort(subjects[ratio].to_numpy()), rtol=1e-12)


@pytest.mark.parametrize("ratio", ["Th1/Treg", "Th17/Treg"])
def test_figure_3_rings_exactly_the_patients_with_an_exacerbation(figure_3, ratio):
    expected = ratios_from_counts()
    relapsed = expected.loc[expected["exacerbation"] == 1, ratio].to_numpy()
    assert len(relapsed) == 2
    rings = gid_artists(figure_3, f"exacerbation:{ratio}")
    (ring,) = rings.values()
    np.testing.assert_allclose(np.sort(ring.get_offsets()[:, 1]), np.sort(relapsed), rtol=1e-12)


def test_figure_3_draws_each_fits_ratio_fold_change_interval(figure_3):
    intervals = gid_artists(figure_3, "interval:")
    for path in ESTIMANDS:
        table = pd.read_csv(path).query("estimand == 'ratio_fold_change'")
        assert len(table) == 2
        for row in table.to_dict("records"):
            line = intervals[f"interval:{path.parent.name}:{row['subset']}"]
            np.testing.assert_allclose(line.get_xdata(), [row["q2.5"], row["q97.5"]])


def test_figure_3_draws_the_log_odds_ratios_95_percent_intervals(figure_3):
    intervals = gid_artists(figure_3, "interval:")
    fit = read_fit(EXACERBATION_FIT)
    for group in ("posterior", "prior"):
        draws = fit[group]["exacerbation_log_or"].to_numpy().ravel()
        expected = np.quantile(draws, [0.025, 0.975])
        np.testing.assert_allclose(intervals[f"interval:{group}"].get_xdata(), expected)
