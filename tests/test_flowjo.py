"""`cd49d import-flowjo`: FlowJo table-editor exports to a cohort file, and every problem placed
at its file, line and column."""

import shutil

import pandas as pd
import pytest

from models.data import load_cohort
from models.schema import CohortSpec
from tests.conftest import BUNDLED_COHORT, ROOT

EXAMPLES = ROOT / "data" / "examples"
FIXTURES = ROOT / "tests" / "data" / "flowjo"
TH1 = "Lymphocytes/Single Cells/CD4+/CXCR3+ CCR6-"
TREG = "Lymphocytes/Single Cells/CD4+/CD25+ CD127lo"
MEDIAN = "Median (Comp-BV421-A :: CD49d)"
GATE_VALUES = {"Th1": 1000, "Th17": 1000, "Treg": 800}


@pytest.fixture
def example(tmp_path):
    """Copies of the example table, sheet and gates file, to edit."""
    names = {
        "table": "flowjo_table.csv",
        "sheet": "flowjo_samples.csv",
        "gates": "flowjo_gates.toml",
    }
    paths = {key: tmp_path / name for key, name in names.items()}
    for key, name in names.items():
        shutil.copy(EXAMPLES / name, paths[key])
    return paths


def run_import(run_cli, paths, out, *options):
    return run_cli(
        "import-flowjo",
        paths["table"],
        "--samples",
        paths["sheet"],
        "--gates",
        paths["gates"],
        "--out",
        out,
        *options,
    )


def edit(path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_example_export_becomes_the_simulated_cohorts_rows(run_cli, example, tmp_path):
    out = tmp_path / "cohort.csv"
    result = run_import(run_cli, example, out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == (
        f"wrote {out}: 36 rows, 12 samples x 3 subsets (Th1: counts, percentage and MFI; "
        "Th17: counts, percentage and MFI; Treg: counts, percentage and MFI)"
    )
    assert result.stderr.strip() == (
        f"{example['sheet']}: warning: not imported: 'notes' (not in the schema of data/README.md)"
    )
    assert "notes" not in out.read_text().splitlines()[0]
    assert run_cli("validate", out).exit_code == 0
    imported = pd.read_csv(out).set_index(["subject_id", "subset"])
    bundled = pd.read_csv(BUNDLED_COHORT).set_index(["subject_id", "subset"]).loc[imported.index]
    for column in ("group", "n_cells", "n_cd49d_pos", "pct_cd49d_pos"):
        assert imported[column].tolist() == bundled[column].tolist()
    assert (
        imported["exacerbation"].fillna(-1).tolist() == bundled["exacerbation"].fillna(-1).tolist()
    )


def test_the_example_imports_each_subsets_median_and_gate_value(run_cli, example, tmp_path):
    out = tmp_path / "cohort.csv"
    assert run_import(run_cli, example, out).exit_code == 0
    imported = pd.read_csv(out)
    table = pd.read_csv(example["table"], index_col=0).drop(index=["Mean", "SD"])
    subjects = pd.read_csv(example["sheet"]).set_index("sample")["subject_id"]
    gates = {"Th1": TH1, "Th17": "Lymphocytes/Single Cells/CD4+/CXCR3- CCR6+", "Treg": TREG}
    for subset, gate in gates.items():
        rows = imported[imported["subset"] == subset].set_index("subject_id")
        medians = table[f"{gate} | {MEDIAN}"].rename(subjects)
        assert rows["mfi_cd49d"].tolist() == medians.loc[rows.index].tolist()
        assert rows["mfi_gate"].eq(GATE_VALUES[subset]).all()
    assert run_cli("validate", out).exit_code == 0


def test_a_sample_without_a_median_has_no_mfi_reading(run_cli, example, tmp_path):
    edit(example["table"], "10.00,116.3\n", "10.00,\n")
    out = tmp_path / "cohort.csv"
    assert run_import(run_cli, example, out).exit_code == 0
    row = pd.read_csv(out).set_index(["subject_id", "subset"]).loc[("HC01", "Treg")]
    assert row[["mfi_cd49d", "mfi_gate"]].isna().all()


def test_the_example_has_flowjos_summary_rows_and_gate_paths_with_spaces_and_plus():
    table = (EXAMPLES / "flowjo_table.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[-2:]] == ["Mean", "SD"]
    assert table[0].startswith(f",{TH1} | Count,")


def test_a_percentage_only_export_imports_percentages(run_cli, tmp_path):
    paths = {
        "table": FIXTURES / "pct_only_table.csv",
        "sheet": FIXTURES / "pct_only_samples.csv",
        "gates": FIXTURES / "pct_only_gates.toml",
    }
    out = tmp_path / "cohort.csv"
    result = run_import(run_cli, paths, out, "--subsets", "Th1,Treg")
    assert result.exit_code == 0, result.stderr
    assert "(Th1: percentage; Treg: percentage)" in result.stdout
    # a gates file without mfi gives no MFI columns
    assert out.read_text().splitlines()[0] == (
        "subject_id,group,subset,n_cells,n_cd49d_pos,pct_cd49d_pos,exacerbation"
    )
    cohort = load_cohort(out, CohortSpec(("Th1", "Treg"), "Treg"))
    assert not cohort.rows["has_counts"].any()
    assert cohort.rows["positive_rate"].tolist() == [0.6, 0.04, 0.8, 0.12]


def failed(run_cli, paths, tmp_path):
    """Run an import that must fail: exit 2, nothing written; returns the problem lines."""
    out = tmp_path / "cohort.csv"
    result = run_import(run_cli, paths, out)
    assert result.exit_code == 2
    assert not out.exists()
    lines = result.stderr.splitlines()
    count = len(lines) - 1
    assert lines[-1] == f"{count} problem{'s' * (count != 1)} found; nothing was written."
    return lines[:-1]


def test_a_sample_missing_from_the_sheet_and_one_missing_from_the_table(run_cli, example, tmp_path):
    table_line = line_of(example["table"], "Specimen_012_NTZ07.fcs")
    edit(example["sheet"], "Specimen_012_NTZ07.fcs", "Specimen_012_NTZ7.fcs")
    sheet_line = line_of(example["sheet"], "Specimen_012_NTZ7.fcs")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['table']}:{table_line}: column 'sample name': sample "
        f"'Specimen_012_NTZ07.fcs' is not in {example['sheet']} (closest: "
        "'Specimen_012_NTZ7.fcs', 'Specimen_011_NTZ03.fcs', 'Specimen_010_NTZ02.fcs')",
        f"{example['sheet']}:{sheet_line}: column 'sample': sample 'Specimen_012_NTZ7.fcs' is "
        f"not in {example['table']} (closest: 'Specimen_012_NTZ07.fcs', "
        "'Specimen_011_NTZ03.fcs', 'Specimen_010_NTZ02.fcs')",
    ]


def test_a_gate_path_that_matches_no_column_suggests_the_closest(run_cli, example, tmp_path):
    edit(example["gates"], f'parent = "{TREG}"', 'parent = "Lymphocytes/CD4/CD25+ CD127lo"')
    edit(
        example["gates"],
        f'positive = "{TREG}/CD49d+"',
        'positive = "Lymphocytes/CD4/CD25+ CD127lo/CD49d+"',
    )
    parent_line = line_of(example["gates"], 'parent = "Lymphocytes/CD4/CD25+')
    problems = failed(run_cli, example, tmp_path)
    assert problems[0] == (
        f"{example['gates']}:{parent_line}: key 'subsets.Treg.parent': gate path "
        f"'Lymphocytes/CD4/CD25+ CD127lo' matches no column of {example['table']} (closest: "
        f"'{TREG}', '{TREG}/CD49d+', 'Lymphocytes/Single Cells/CD4+/CXCR3- CCR6+')"
    )
    assert problems[1].startswith(
        f"{example['gates']}:{parent_line + 1}: key 'subsets.Treg.positive': gate path "
        "'Lymphocytes/CD4/CD25+ CD127lo/CD49d+' matches no column"
    )
    assert len(problems) == 2


def test_a_count_that_is_not_a_whole_number(run_cli, example, tmp_path):
    edit(example["table"], "Specimen_001_HC01.fcs,7571,", "Specimen_001_HC01.fcs,7571.5,")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['table']}:2: column '{TH1} | Count': not a whole number: 7571.5"
    ]


def test_the_validators_problems_are_placed_in_the_table_and_the_sheet(run_cli, example, tmp_path):
    edit(
        example["table"],
        "Specimen_001_HC01.fcs,7571,6453,85.23",
        "Specimen_001_HC01.fcs,6453,7571,85.23",
    )
    edit(example["sheet"], "NTZ02,MS_NTZ,0", "NTZ02,MS_NTZ,2")
    sheet_line = line_of(example["sheet"], "NTZ02,MS_NTZ,2")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['sheet']}:{sheet_line}: column 'exacerbation': exacerbation must be 0 or 1, "
        "got 2",
        f"{example['table']}:2: column '{TH1}/CD49d+ | Count': n_cd49d_pos (7571) exceeds "
        "n_cells (6453)",
        f"{example['table']}:2: column '{TH1}/CD49d+ | Freq. of Parent (%)': 85.23% disagrees "
        "with the counts (7571/6453 = 117.33%) by more than 0.5 percentage points",
    ]


def test_a_median_of_zero_or_below_is_placed_in_the_table(run_cli, example, tmp_path):
    # FlowJo can export such medians on a compensated channel; their logarithm does not exist.
    edit(example["table"], "85.23,4099.0,", "85.23,-12.5,")
    edit(example["table"], "78.56,2861.4,", "78.56,0,")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['table']}:2: column '{TH1} | {MEDIAN}': fluorescence must be above 0 (its "
        "logarithm is modelled), got -12.5",
        f"{example['table']}:3: column 'Lymphocytes/Single Cells/CD4+/CXCR3- CCR6+ | {MEDIAN}': "
        "fluorescence must be above 0 (its logarithm is modelled), got 0",
    ]


def test_a_median_that_is_not_a_number(run_cli, example, tmp_path):
    edit(example["table"], "85.23,4099.0,", "85.23,n.d.,")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['table']}:2: column '{TH1} | {MEDIAN}': not a number: 'n.d.'"
    ]


def test_mfi_without_gate_value_and_the_reverse(run_cli, example, tmp_path):
    edit(example["gates"], "gate_value = 1000\n", "")
    edit(example["gates"], f'mfi = "{TREG} | {MEDIAN}"\n', "")
    th1_line = line_of(example["gates"], "[subsets.Th1]")
    treg_line = line_of(example["gates"], "[subsets.Treg]")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['gates']}:{th1_line}: key 'subsets.Th1.gate_value': missing: 'mfi' is "
        "given, and an MFI reading needs the gate's boundary value (the CD49d+ gate's lower "
        "edge, in the units of the 'mfi' column)",
        f"{example['gates']}:{treg_line}: key 'subsets.Treg.mfi': missing: 'gate_value' is "
        "given, and an MFI reading needs the subset's CD49d median (the full name of the "
        "table's median column)",
    ]


def test_a_gate_value_that_is_not_a_number_or_not_above_zero(run_cli, example, tmp_path):
    edit(example["gates"], "gate_value = 800", 'gate_value = "800 (BV421)"')
    treg_line = line_of(example["gates"], 'gate_value = "800')
    assert failed(run_cli, example, tmp_path) == [
        f"{example['gates']}:{treg_line}: key 'subsets.Treg.gate_value': must be a number above "
        "0 (the CD49d+ gate's lower edge, in the units of the 'mfi' column), got '800 (BV421)'"
    ]
    edit(example["gates"], 'gate_value = "800 (BV421)"', "gate_value = 0")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['gates']}:{treg_line}: key 'subsets.Treg.gate_value': fluorescence must be "
        "above 0 (its logarithm is modelled), got 0"
    ]


def test_a_positive_gate_outside_its_parent_and_an_unknown_subset(run_cli, example, tmp_path):
    edit(example["gates"], f'positive = "{TH1}/CD49d+"', f'positive = "{TREG}/CD49d+"')
    edit(example["gates"], "[subsets.Th17]", "[subsets.Th2]")
    positive_line = line_of(example["gates"], f'positive = "{TREG}/CD49d+"')
    th2_line = line_of(example["gates"], "[subsets.Th2]")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['gates']}:{positive_line}: key 'subsets.Th1.positive': gate "
        f"'{TREG}/CD49d+' is not under the parent gate '{TH1}': the CD49d+ gate must be a "
        "child of the subset's gate",
        f"{example['gates']}:{th2_line}: key 'subsets.Th2': unknown subset 'Th2' (allowed: "
        "Th1, Th17, Treg; other subsets must be declared with --subsets)",
    ]


def test_two_samples_of_one_subject_and_a_near_miss_in_the_sheet(run_cli, example, tmp_path):
    edit(example["sheet"], "Specimen_002_HC02.fcs,HC02", "Specimen_002_HC02.fcs,HC01")
    edit(example["sheet"], "exacerbation", "exacerbaton")
    problems = failed(run_cli, example, tmp_path)
    assert problems == [
        f"{example['sheet']}:3: column 'subject_id': subject 'HC01' is given two samples (first "
        "at line 2); samples of one patient (before and under natalizumab) need their own "
        "subject_id and a shared patient_id"
    ]
    edit(example["sheet"], "Specimen_002_HC02.fcs,HC01", "Specimen_002_HC02.fcs,HC02")
    assert failed(run_cli, example, tmp_path) == [
        f"{example['sheet']}:1: column 'exacerbaton': unknown column; did you mean 'exacerbation'?",
    ]


def test_an_existing_output_is_kept(run_cli, example, tmp_path):
    out = tmp_path / "cohort.csv"
    out.write_text("mine\n")
    result = run_import(run_cli, example, out)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{out}: exists; choose another --out or pass --overwrite"
    assert out.read_text() == "mine\n"
