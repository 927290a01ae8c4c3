"""The command line speaks in the package's own words: a one-line purpose per command, one clear
line per failure with exit status 2 (never a traceback), and library warnings summarised."""

import arviz as az
import numpy as np
import pytest

from analysis.cli import main
from simulations.cohort import DEFAULT_CONFIG
from tests.conftest import ROOT

EXAMPLES = ROOT / "data" / "examples"


def test_help_lists_every_command_with_its_whole_purpose(run_cli):
    result = run_cli("--help")
    assert result.exit_code == 0
    listed = {
        line.split()[0]: line.split(None, 1)[1]
        for line in result.stdout.split("Commands:")[1].splitlines()
        if line.strip()
    }
    assert listed == {name: command.short_help for name, command in main.commands.items()}
    assert all(not text.endswith("...") for text in listed.values())


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_help(run_cli, name):
    assert run_cli(name, "--help").exit_code == 0


def config_with(tmp_path, old: str, new: str):
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "config.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


BROKEN = {
    "simulate-cohort, not TOML": (
        lambda tmp: ["simulate-cohort", "--config", broken_toml(tmp), "--out", tmp / "out.csv"],
        "{path}: cannot read configuration: Invalid value (at line 1, column 8)",
    ),
    "simulate-cohort, a rate of 1.2": (
        lambda tmp: [
            "simulate-cohort",
            "--config",
            config_with(tmp, "HC = { Th1 = 0.80,", "HC = { Th1 = 1.2,"),
            "--out",
            tmp / "out.csv",
        ],
        "{path}: parameters.baseline_positive_rate needs a rate strictly between 0 and 1 for "
        "HC.Th1",
    ),
    "power, not TOML": (
        lambda tmp: ["power", broken_toml(tmp), "--out", tmp / "out"],
        "{path}: not valid TOML: Invalid value (at line 1, column 8)",
    ),
    "import-flowjo, gates not TOML": (
        lambda tmp: [
            "import-flowjo",
            EXAMPLES / "flowjo_table.csv",
            "--samples",
            EXAMPLES / "flowjo_samples.csv",
            "--gates",
            broken_toml(tmp),
            "--out",
            tmp / "out.csv",
        ],
        "{path}:1: not valid TOML: Invalid value (at line 1, column 8)",
    ),
    "verify, manifest not JSON": (
        lambda tmp: ["verify", "--manifest", broken_json(tmp)],
        "{path}: no readable manifest (Expecting value: line 1 column 7 (char 6)); `make "
        "paper` writes it",
    ),
}


def broken_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("not = [valid\n", encoding="utf-8")
    return path


def broken_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": ', encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_configuration_is_one_line_and_exit_2(run_cli, tmp_path, case):
    arguments, expected = BROKEN[case]
    args = arguments(tmp_path)
    path = next(a for a in args if str(a).endswith((".toml", ".json")))
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == expected.format(path=path)
    assert "Traceback" not in result.stderr
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_a_design_whose_exacerbations_the_model_cannot_draw_says_what_to_change(run_cli, tmp_path):
    path = config_with(tmp_path, "exacerbations = 2", "exacerbations = 8")
    path.write_text(
        path.read_text(encoding="utf-8").replace("candidate_draws = 200", "candidate_draws = 5"),
        encoding="utf-8",
    )
    result = run_cli("simulate-cohort", "--config", path, "--out", tmp_path / "out.csv")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}: none of 5 draws had 8 exacerbations among 8 MS_NTZ ")
    assert line.endswith(
        "set parameters.exacerbation_intercept so that the expected number is near "
        "design.exacerbations (logit of their share), or raise candidate_draws; nothing was "
        "written."
    )
    assert not (tmp_path / "out.csv").exists()


def fake_fit(path, model: str, seed: int) -> None:
    """A fit.nc with a pointwise log-likelihood whose draws vary wildly (Pareto k > 0.7)."""
    rng = np.random.default_rng(seed)
    log_lik = rng.standard_t(1, size=(2, 50, 30)) * 5
    tree = az.from_dict(
        {
            "posterior": {"mu": rng.normal(size=(2, 50))},
            "log_likelihood": {"n_cd49d_pos": log_lik},
        }
    )
    tree.attrs["model"] = model
    tree.to_netcdf(path)


def test_compare_summarises_arviz_warnings_in_one_line(run_cli, tmp_path):
    fits = [tmp_path / "a.nc", tmp_path / "b.nc"]
    fake_fit(fits[0], "saturation", 1)
    fake_fit(fits[1], "saturation_per_subset", 2)
    result = run_cli("compare", *fits, "--out", tmp_path / "compare.csv")
    assert result.exit_code == 0
    assert "UserWarning" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("WARNING")]
    assert line.startswith("WARNING: Pareto k > 0.7 for some observations (")
    assert (tmp_path / "compare.csv").exists()


def test_compare_refuses_a_fit_without_log_likelihood(run_cli, tmp_path):
    with_log_lik, without = tmp_path / "a.nc", tmp_path / "b.nc"
    fake_fit(with_log_lik, "saturation", 1)
    az.from_dict({"posterior": {"mu": np.zeros((2, 5))}}).to_netcdf(without)
    result = run_cli("compare", with_log_lik, without, "--out", tmp_path / "compare.csv")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{without}: no pointwise log-likelihood of n_cd49d_pos (cd49d fit writes it into "
        "fit.nc; a thinned or hand-made file lacks it)",
        "nothing was written.",
    ]
    assert not (tmp_path / "compare.csv").exists()
