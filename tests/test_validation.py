"""Every bad-input case: the exact message, exit status 2, and nothing written."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from models.data import CohortFileError, load_cohort
from models.schema import CohortSpec
from tests.conftest import BAD_FILES, BUNDLED_COHORT, GOOD_MINIMAL

EXPECTED = {
    "empty.csv": [": file is empty"],
    "not_utf8.csv": [":4: not UTF-8 text (byte 0xe9); save the file as CSV UTF-8"],
    "spreadsheet.xlsx": [
        ": not a CSV file: it holds binary data (a spreadsheet?); export it as CSV (UTF-8)"
    ],
    "tab_separated.csv": [
        ":1: not a comma-separated file: the header has one column; it looks tab-separated"
    ],
    "header_only.csv": [": file has a header but no data rows"],
    "ragged_row.csv": [":3: expected 7 fields as in the header, found 8"],
    "missing_column.csv": [":1: column 'subset': required column is missing"],
    "near_miss_column.csv": [
        ":1: column 'exacerbaton': unknown column; did you mean 'exacerbation'?",
        ":1: column 'n_cell': unknown column; did you mean 'n_cells'?",
    ],
    "one_count_column.csv": [
        ":1: column 'n_cd49d_pos': required column is missing: counts need both n_cells and "
        "n_cd49d_pos (or give only pct_cd49d_pos)"
    ],
    "no_measurement_columns.csv": [
        ":1: no measurement columns: give n_cells and n_cd49d_pos, or pct_cd49d_pos, or all three"
    ],
    "unknown_group.csv": [
        ":4: column 'group': unknown group 'RRMS' (allowed: HC, MS_naive, MS_NTZ, NMOSD)"
    ],
    "unknown_subset.csv": [
        ":4: column 'subset': unknown subset 'Th2' (allowed: Th1, Th17, Treg; "
        "other subsets must be declared with --subsets)"
    ],
    "blank_required.csv": [":4: column 'group': blank or NaN in a required field"],
    "nan_required.csv": [":4: column 'subset': blank or NaN in a required field"],
    "duplicate_row.csv": [
        ":5: column 'subset': duplicate row for subject 'M01' and subset 'Th1' (first at line 4)"
    ],
    "subject_two_groups.csv": [
        ":5: column 'group': subject 'M01' is in two groups: HC here, MS_naive at line 4"
    ],
    "negative_count.csv": [":4: column 'n_cd49d_pos': negative count: -8"],
    "non_integer_count.csv": [":4: column 'n_cells': not a whole number of cells: 1000.5"],
    "not_a_number.csv": [":4: column 'n_cd49d_pos': not a number: 'eight hundred'"],
    "positives_exceed_cells.csv": [
        ":4: column 'n_cd49d_pos': n_cd49d_pos (1200) exceeds n_cells (1000)"
    ],
    "zero_cells.csv": [
        ":4: column 'n_cells': n_cells is 0: the gate holds no events, so no rate can be formed"
    ],
    "pct_out_of_range.csv": [":4: column 'pct_cd49d_pos': percentage outside 0-100: 180"],
    "pct_fractions.csv": [
        ": column 'pct_cd49d_pos': every value is between 0 and 1: these look "
        "like fractions, but percentages (0-100) are expected; multiply by 100"
    ],
    "counts_pct_disagree.csv": [
        ":4: column 'pct_cd49d_pos': 70% disagrees with the counts "
        "(800/1000 = 80.00%) by more than 0.5 percentage points"
    ],
    "no_measurement.csv": [
        ":4: column 'pct_cd49d_pos': no measurement: give n_cells and n_cd49d_pos, or pct_cd49d_pos"
    ],
    "exacerbation_outside_ntz.csv": [
        ":4: column 'exacerbation': must be blank outside MS_NTZ (this row's group is MS_naive)"
    ],
    "exacerbation_not_binary.csv": [
        ":2: column 'exacerbation': exacerbation must be 0 or 1, got 2",
        ":3: column 'exacerbation': exacerbation must be 0 or 1, got 2",
    ],
    "mfi_half_reading.csv": [
        ":3: column 'mfi_gate': blank, but mfi_cd49d is given: an MFI reading needs both "
        "mfi_cd49d and mfi_gate",
        ":4: column 'mfi_cd49d': blank, but mfi_gate is given: an MFI reading needs both "
        "mfi_cd49d and mfi_gate",
        ":5: column 'mfi_cd49d': fluorescence must be above 0 (its logarithm is modelled), "
        "got -12.5",
    ],
    "saturation_out_of_range.csv": [
        ":2: column 'saturation_measured': saturation must be a fraction between 0 and 1, got 87",
        ":3: column 'saturation_measured': saturation must be a fraction between 0 and 1, got 87",
    ],
}


def test_every_bad_file_has_an_expected_message():
    assert sorted(p.name for p in BAD_FILES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_validate_reports_exact_problems_and_exits_2(run_cli, name):
    path = BAD_FILES / name
    result = run_cli("validate", path)
    count = len(EXPECTED[name])
    summary = f"{path}: {count} problem{'s' * (count != 1)} found; nothing was written."
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{path}{suffix}" for suffix in EXPECTED[name]] + [
        summary
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("name", ["duplicate_row.csv", "empty.csv", "pct_fractions.csv"])
def test_describe_on_bad_input_writes_nothing(run_cli, tmp_path, name):
    out = tmp_path / "out"
    result = run_cli("describe", BAD_FILES / name, "--out", out)
    assert result.exit_code == 2
    assert not out.exists()


def test_missing_file_real_process_exit_2_without_traceback(tmp_path):
    missing = tmp_path / "nowhere.csv"
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "validate", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{missing}: file not found",
        f"{missing}: 1 problem found; nothing was written.",
    ]
    assert "Traceback" not in done.stderr


def test_all_problems_of_a_file_are_reported_at_once(tmp_path):
    path = tmp_path / "many.csv"
    lines = GOOD_MINIMAL.read_text().splitlines()
    lines[1] = "N01,MS_NTZ,Th1,1000,1600,60.00,0"  # positives exceed cells (and pct disagrees)
    lines[3] = "M01,RRMS,Th1,1000,800,80.00,"  # unknown group
    lines[4] = "M01,MS_naive,Treg,-5,60,12.00,"  # negative count
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CohortFileError) as caught:
        load_cohort(path)
    assert [(p.line, p.column) for p in caught.value.problems] == [
        (2, "n_cd49d_pos"),
        (2, "pct_cd49d_pos"),
        (4, "group"),
        (5, "n_cells"),
    ]


def test_valid_files_load(run_cli):
    result = run_cli("validate", BUNDLED_COHORT)
    assert result.exit_code == 0
    assert "valid: 150 rows, 50 subjects (HC 8, MS_naive 27, MS_NTZ 8, NMOSD 7)" in result.stdout
    cohort = load_cohort(GOOD_MINIMAL)
    assert cohort.rows["positive_rate"].tolist() == [0.6, 0.04, 0.8, 0.12]


def test_counts_are_preferred_over_percentages(tmp_path):
    path = tmp_path / "rounded.csv"
    lines = GOOD_MINIMAL.read_text().splitlines()
    lines[1] = "N01,MS_NTZ,Th1,1000,604,60,0"  # pct rounded to a whole number: within tolerance
    lines[3] = "M01,MS_naive,Th1,,,80.00,"  # pct only
    path.write_text("\n".join(lines) + "\n")
    rates = load_cohort(path).rows["positive_rate"].tolist()
    assert rates[0] == 0.604 and rates[2] == 0.8


def test_other_subsets_need_declaring(tmp_path, run_cli):
    path = tmp_path / "cd8.csv"
    path.write_text(GOOD_MINIMAL.read_text().replace("Th1", "Tc1"))
    assert run_cli("validate", path).exit_code == 2
    declared = run_cli("validate", path, "--subsets", "Tc1,Treg", "--reference-subset", "Treg")
    assert declared.exit_code == 0
    cohort = load_cohort(path, CohortSpec(("Tc1", "Treg"), "Treg"))
    assert cohort.spec.effector_subsets == ("Tc1",)


def test_reference_subset_must_be_declared(run_cli):
    result = run_cli(
        "validate", GOOD_MINIMAL, "--subsets", "Th1,Th17", "--reference-subset", "Treg"
    )
    assert result.exit_code == 2
    assert "reference subset 'Treg' is not among the subsets (Th1, Th17)" in result.stderr


# --- the files labs have: measurement columns, extra columns, encodings -----------------------

GOOD_ROWS = GOOD_MINIMAL.read_text().splitlines()


def written(tmp_path, name: str, lines: list[str], *, newline: str = "\n", bom: bool = False):
    path = tmp_path / name
    text = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def columns(lines: list[str], keep: list[str]) -> list[str]:
    """The same rows with only the columns ``keep``."""
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines]
    return [",".join(row[name] for name in keep) for row in rows]


def test_counts_without_a_percentage_column_load(tmp_path):
    keep = ["subject_id", "group", "subset", "n_cells", "n_cd49d_pos", "exacerbation"]
    cohort = load_cohort(written(tmp_path, "counts.csv", columns(GOOD_ROWS, keep)))
    assert cohort.rows["positive_rate"].tolist() == [0.6, 0.04, 0.8, 0.12]
    assert cohort.rows["pct_cd49d_pos"].isna().all()


def test_a_percentage_without_count_columns_loads(tmp_path):
    keep = ["subject_id", "group", "subset", "pct_cd49d_pos", "exacerbation"]
    cohort = load_cohort(written(tmp_path, "pct.csv", columns(GOOD_ROWS, keep)))
    assert cohort.rows["positive_rate"].tolist() == [0.6, 0.04, 0.8, 0.12]
    assert not cohort.rows["has_counts"].any()


def test_unknown_columns_are_ignored_with_a_warning_and_recorded(tmp_path, run_cli):
    lines = [GOOD_ROWS[0] + ",notes,visit_date,panel"]
    lines += [line + ",ok,2016-03-01,A" for line in GOOD_ROWS[1:]]
    path = written(tmp_path, "extra.csv", lines)
    cohort = load_cohort(path)
    assert cohort.ignored_columns == ("notes", "visit_date", "panel")
    assert not {"notes", "visit_date", "panel"} & set(cohort.rows.columns)
    result = run_cli("describe", path, "--out", tmp_path / "out")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == (
        f"{path}: warning: unknown columns 'notes', 'visit_date', 'panel' ignored (not in the "
        "schema of data/README.md; describe and fit record them in provenance)"
    )
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["ignored_columns"] == ["notes", "visit_date", "panel"]


@pytest.mark.parametrize(
    ("name", "meant"),
    [("saturation_measure", "saturation_measured"), ("Subject ID", "subject_id"), ("AGE", "age")],
)
def test_near_misses_of_known_columns_are_refused(tmp_path, name, meant):
    lines = [GOOD_ROWS[0] + f",{name}"] + [line + "," for line in GOOD_ROWS[1:]]
    with pytest.raises(CohortFileError) as caught:
        load_cohort(written(tmp_path, "near.csv", lines))
    assert f"column '{name}': unknown column; did you mean '{meant}'?" in str(caught.value)


def test_byte_order_mark_crlf_and_quoted_fields_are_accepted(tmp_path):
    lines = [GOOD_ROWS[0] + ",notes"]
    lines += [line + ',"seen, twice"' for line in GOOD_ROWS[1:]]
    lines[1] = '"N01","MS_NTZ","Th1","1000","600","60.00","0","a ""quoted"" note"'
    path = written(tmp_path, "excel.csv", lines, newline="\r\n", bom=True)
    cohort = load_cohort(path)
    expected = load_cohort(GOOD_MINIMAL).rows
    assert cohort.rows["subject_id"].tolist() == expected["subject_id"].tolist()
    assert cohort.rows["positive_rate"].tolist() == expected["positive_rate"].tolist()
    assert cohort.ignored_columns == ("notes",)


def test_byte_order_mark_alone_keeps_the_first_column_name(tmp_path):
    cohort = load_cohort(written(tmp_path, "bom.csv", GOOD_ROWS, bom=True))
    assert cohort.rows["subject_id"].tolist() == ["N01", "N01", "M01", "M01"]


def test_a_fit_records_the_ignored_columns_in_its_attributes(tmp_path):
    """fit.nc's attributes are flat: the ignored columns become one comma-separated text."""
    from analysis.cli import provenance
    from analysis.fit_report import flat_provenance

    lines = [GOOD_ROWS[0] + ",notes,panel"] + [line + ",x,A" for line in GOOD_ROWS[1:]]
    path = written(tmp_path, "extra.csv", lines)
    record = provenance({"cohort": path}, "cd49d fit --model saturation", load_cohort(path))
    assert flat_provenance(record)["ignored_columns"] == "notes, panel"


def no_follow_up(tmp_path, *, whole_cohort: bool):
    """The bundled cohort without follow-up: no exacerbation column, or two patients' blank."""
    rows = pd.read_csv(BUNDLED_COHORT, dtype=str, keep_default_na=False)
    if whole_cohort:
        rows = rows.drop(columns="exacerbation")
    else:
        rows.loc[rows["subject_id"].isin(["NTZ02", "NTZ05"]), "exacerbation"] = ""
    path = tmp_path / "no_follow_up.csv"
    rows.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("whole_cohort", [True, False])
def test_a_cohort_without_follow_up_is_valid_and_the_exacerbation_models_refuse_it(
    run_cli, tmp_path, whole_cohort
):
    path = no_follow_up(tmp_path, whole_cohort=whole_cohort)
    assert run_cli("validate", path).exit_code == 0
    described = run_cli("describe", path, "--out", tmp_path / "describe")
    assert described.exit_code == 0
    table = pd.read_csv(tmp_path / "describe" / "frequentist.csv")
    events = table[table["analysis"] == "exacerbation"]
    if whole_cohort:
        assert events.empty and "no exacerbation comparison" in described.stdout
    else:  # 2 exacerbators and 4 without among the 6 patients with follow-up
        assert set(events["n"]) == {2} and set(events["n_other"]) == {4}
    missing = (
        "8 have none (no follow-up): NTZ01, NTZ02, NTZ03, NTZ04, NTZ05, NTZ06, NTZ07, NTZ08"
        if whole_cohort
        else "2 have none (no follow-up): NTZ02, NTZ05"
    )
    for command in (
        ["fit", path, "--model", "exacerbation", "--out", tmp_path / "fit"],
        [
            "crossval",
            path,
            "--model",
            "exacerbation_logit",
            "--model",
            "positive_rate",
            "--out",
            tmp_path / "cv",
        ],
    ):
        result = run_cli(*command)
        model = command[3]
        assert result.exit_code == 2
        assert result.stderr.splitlines()[-1] == (
            f"{path}: the {model} model needs exacerbation (0 or 1) for every MS_NTZ patient; "
            f"{missing}. Give their follow-up, or fit a model without exacerbations "
            "(positive_rate, saturation, saturation_per_subset)"
        )
    assert not (tmp_path / "fit" / "fit.nc").exists() and not (tmp_path / "cv").exists()
