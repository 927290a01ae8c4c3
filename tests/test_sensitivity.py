"""How n depends on the assumptions: --vary, the plan's [sensitivity] table, variants, figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis import fig_sample_size_sensitivity
from analysis.cli import main as cli_main
from simulations.plan import Plan, PlanError, load_plan
from simulations.sensitivity import (
    SENSITIVITY_COLUMNS,
    parse_vary,
    plan_value,
    variant,
    variations,
)
from simulations.trials import Cell, design_rows, plan_parameters

PLAN = """name = "vary"
question = "biomarker"
root_seed = 3
[trial]
design = "cross_sectional"
n = [8, 12]
endpoints = ["ratio_fold_change_Th17_Treg"]
[effect]
kappa = 0.3
[replicates]
initial = 40
null = 10
[analysis]
mixed_model = false
[analysis.bayesian]
enabled = false
"""


@pytest.fixture
def plan(tmp_path) -> Plan:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return load_plan(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kappa", "--vary 'kappa': expected NAME=V1,V2,... (e.g. kappa=0.3,0.5)"),
        (
            "sigma=1,2",
            "--vary: unknown assumption 'sigma' (known: kappa, saturation_mean, "
            "saturation_sd, tau_subject, tau_subject_subset, visit_sd, events_per_gate_scale, "
            "exacerbation_log_or)",
        ),
        ("kappa=0.3,high", "--vary kappa: values must be numbers, got '0.3,high'"),
        ("kappa=", "--vary kappa: no values given"),
    ],
)
def test_bad_vary_is_refused_with_its_reason(text, message):
    with pytest.raises(ValueError) as err:
        parse_vary(text)
    assert str(err.value) == message


def test_vary_adds_to_the_plans_table_and_the_mechanism_kappa_is_refused(plan):
    table = variations(
        plan.model_copy(update={"sensitivity": {"tau_subject": [0.5]}}),
        [parse_vary("kappa=0.2,0.5")],
    )
    assert table == {"tau_subject": [0.5], "kappa": [0.2, 0.5]}
    mechanism = load_plan("simulations/plans/mechanism.toml")
    with pytest.raises(ValueError, match="the mechanism question's kappa is its null"):
        variations(mechanism, [parse_vary("kappa=0.5")])


def test_a_variant_changes_one_assumption_and_runs_no_null(plan):
    changed = variant(plan, "tau_subject", 0.6)
    assert changed.effect.tau_subject == 0.6 and changed.effect.kappa == 0.3
    assert changed.replicates.null == 0
    assert changed.result_hash() != plan.result_hash()
    assert plan_value(plan, "tau_subject") == 0.3  # the cohort configuration's
    assert plan_value(plan, "kappa") == 0.3  # the plan's own
    with pytest.raises(PlanError) as err:
        variant(plan, "saturation_mean", 0.5)
    assert err.value.lines == [
        "saturation_mean=0.5: effect.saturation_mean: Input should be greater than or equal to 0.6"
    ]


def test_the_sensitivity_table_is_left_out_of_the_result_hash(plan):
    assert plan.model_copy(update={"sensitivity": {"kappa": [0.5]}}).result_hash() == (
        plan.result_hash()
    )


def test_events_per_gate_and_subject_sds_reach_the_generator(plan):
    base = design_rows(plan, 200, np.random.default_rng(1))
    doubled = design_rows(
        variant(plan, "events_per_gate_scale", 2.0), 200, np.random.default_rng(1)
    )
    assert (doubled["n_cells"] / base["n_cells"]).median() == pytest.approx(2.0, rel=1e-3)
    cell = Cell("alternative", 8)
    wider = plan_parameters(variant(plan, "tau_subject", 0.6), cell)["tau_subject"]
    assert wider == pytest.approx(2 * plan_parameters(plan, cell)["tau_subject"])


def test_vary_reruns_the_search_and_power_follows_the_effect(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_main,
        ["power", str(path), "--out", str(out), "--vary", "kappa=0.1,0.7", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "sample_size_sensitivity.csv")
    assert list(table.columns) == SENSITIVITY_COLUMNS
    assert sorted(table["value"].unique()) == [0.1, 0.3, 0.7]
    assert (table["plan_value"] == 0.3).all()
    power = {
        kappa: pd.read_csv(folder / "power.csv").query("scenario == 'alternative' and n == 12")
        for kappa, folder in [
            (0.1, out / "sensitivity" / "kappa=0.1"),
            (0.7, out / "sensitivity" / "kappa=0.7"),
        ]
    }
    assert power[0.7]["power_all"].iloc[0] > power[0.1]["power_all"].iloc[0] + 0.3
    assert set(pd.read_csv(out / "sensitivity" / "kappa=0.7" / "power.csv")["scenario"]) == {
        "alternative"
    }
    assert "80% power at kappa = 0.7" in result.output
    assert (out / "sample_size_sensitivity.png").read_bytes().startswith(b"\x89PNG")


def test_sensitivity_figure_command(tmp_path):
    rows = []
    for value, n in [(0.2, 30.0), (0.4, 16.0), (0.6, np.nan)]:
        rows.append(
            {
                "assumption": "kappa",
                "value": value,
                "plan_value": 0.4,
                "design": "cross_sectional",
                "endpoint": "e",
                "analysis": "mann_whitney",
                "target_power": 0.8,
                "n_required": n,
                "n_low": n - 2,
                "n_high": np.nan,
                "n_real": n,
                "n_below": np.nan,
                "n_above": np.nan,
                "n_min_grid": 4,
                "n_max_grid": 48,
                "status": "ok" if value < 0.5 else "beyond_grid",
                "note": "",
            }
        )
    csv = tmp_path / "s.csv"
    pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS).to_csv(csv, index=False)
    output = tmp_path / "s.png"
    result = CliRunner().invoke(fig_sample_size_sensitivity.main, [str(csv), str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(b"\x89PNG")
