"""Checks that turn a cohort CSV into a list of problems, each naming file, line and column.

Four stages, each run only when the one before found nothing that makes it meaningless:
the file itself (exists, non-empty, UTF-8, rectangular CSV), the header (required and known
columns), every cell (types, labels, ranges; pandera does the per-cell checks) and relations
across rows (duplicates, a subject in two groups, subject-level values that disagree).
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from models import schema as s

#: The header is line 1, so the first data row (DataFrame index 0) is line 2 unless blank lines
#: intervene; each frame built here carries the true line number in this column.
LINE = "source_line"
#: ``difflib`` similarity at or above which an unknown column is taken for a misspelt known one
#: (``exacerbaton``, ``saturation_measure``, ``n_cell``: 0.92-0.97; ``notes`` vs ``n_cells``:
#: 0.5) and refused rather than ignored.
NEAR_MISS = 0.8


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a cohort file; ``line`` 0 means the whole file."""

    line: int
    column: str
    message: str

    def render(self, path: Path | str) -> str:
        """Format as one line: ``FILE:LINE: column 'C': what is wrong``."""
        where = f"{path}:{self.line}" if self.line else f"{path}"
        column = f" column '{self.column}':" if self.column else ""
        return f"{where}:{column} {self.message}"


class CohortFileError(Exception):
    """A cohort file failed validation; ``problems`` lists every problem found."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.path = Path(path)
        self.problems = sorted(problems)
        super().__init__("\n".join(p.render(path) for p in self.problems))


# --- stage 1: the file ---------------------------------------------------------------------


def read_text(path: Path) -> tuple[str | None, list[Problem]]:
    """Read the file as UTF-8 text, or say why it cannot be."""
    if not path.exists():
        return None, [Problem(0, "", "file not found")]
    if path.is_dir():
        return None, [Problem(0, "", "is a folder, not a CSV file")]
    raw = path.read_bytes()
    if not raw.strip():
        return None, [Problem(0, "", "file is empty")]
    if b"\x00" in raw[:8192]:
        return None, [
            Problem(
                0,
                "",
                "not a CSV file: it holds binary data (a spreadsheet?); export it as CSV (UTF-8)",
            )
        ]
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        byte = raw[err.start]
        return None, [
            Problem(line, "", f"not UTF-8 text (byte 0x{byte:02x}); save the file as CSV UTF-8")
        ]


def parse_csv(text: str) -> tuple[pd.DataFrame, tuple[str, ...], list[Problem]]:
    """Split text into a frame of stripped strings (one row per non-blank line, the schema's
    columns only) and the unknown columns left out of it (``unknown_columns``)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as err:
        return pd.DataFrame(), (), [Problem(reader.line_num, "", f"not valid CSV: {err}")]
    rows = [(n, [cell.strip() for cell in row]) for n, row in rows if any(c.strip() for c in row)]
    header_line, header = rows[0]
    problems = header_problems(header, header_line)
    records, lines = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            problems.append(
                Problem(
                    line, "", f"expected {len(header)} fields as in the header, found {len(row)}"
                )
            )
        else:
            records.append(row)
            lines.append(line)
    if not problems and not records:
        problems.append(Problem(0, "", "file has a header but no data rows"))
    if problems:
        return pd.DataFrame(), (), problems
    ignored = unknown_columns(header)
    frame = pd.DataFrame(records, columns=header, dtype=object).drop(columns=list(ignored))
    frame[LINE] = lines
    return frame, ignored, []


DELIMITER_NAMES = {"\t": "tab", ";": "semicolon", "|": "pipe"}


def header_problems(header: list[str], line: int) -> list[Problem]:
    """A single-column header means another delimiter; otherwise report repeated and missing
    columns and near misses of known ones."""
    if len(header) == 1:
        found = [name for d, name in DELIMITER_NAMES.items() if d in header[0]]
        hint = f"; it looks {found[0]}-separated" if found else ""
        return [Problem(line, "", f"not a comma-separated file: the header has one column{hint}")]
    problems = [
        Problem(line, name, "column name appears more than once in the header")
        for name in sorted({c for c in header if header.count(c) > 1})
    ]
    problems += [
        Problem(line, name, "required column is missing")
        for name in s.REQUIRED_COLUMNS
        if name not in header
    ]
    problems += measurement_column_problems(header, line)
    problems += [
        Problem(line, name, f"unknown column; did you mean {match!r}?")
        for name in header
        if name not in s.KNOWN_COLUMNS and (match := near_miss(name))
    ]
    return problems


def measurement_column_problems(header: list[str], line: int) -> list[Problem]:
    """The file needs both count columns, the percentage column, or all three."""
    counts = [c for c in s.COUNT_COLUMNS if c in header]
    if len(counts) == 1:
        missing = next(c for c in s.COUNT_COLUMNS if c not in header)
        return [
            Problem(
                line,
                missing,
                f"required column is missing: counts need both {' and '.join(s.COUNT_COLUMNS)} "
                f"(or give only {s.PCT_COLUMN})",
            )
        ]
    if not counts and s.PCT_COLUMN not in header:
        return [
            Problem(
                line,
                "",
                f"no measurement columns: give {' and '.join(s.COUNT_COLUMNS)}, or "
                f"{s.PCT_COLUMN}, or all three",
            )
        ]
    return []


def near_miss(name: str) -> str | None:
    """The known column that ``name`` almost spells (case, spaces or a letter or two apart)."""
    normalised = re.sub(r"[\s\-.]+", "_", name.strip().lower())
    if normalised in s.KNOWN_COLUMNS:
        return normalised
    matches = difflib.get_close_matches(normalised, s.KNOWN_COLUMNS, n=1, cutoff=NEAR_MISS)
    return matches[0] if matches else None


def unknown_columns(header: list[str]) -> tuple[str, ...]:
    """Columns outside the schema that are no near miss of a known one: ignored, with a
    warning (a lab's ``notes``, ``visit_date``, ``panel``)."""
    return tuple(name for name in header if name not in s.KNOWN_COLUMNS and not near_miss(name))


# --- stage 3: every cell --------------------------------------------------------------------


def typed_frame(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Read missing-value texts as missing and numeric columns as floats; flag non-numbers."""
    frame = raw.copy()
    problems = []
    for column in raw.columns.drop(LINE):
        is_missing = raw[column].str.lower().isin(s.MISSING_TEXTS)
        frame[column] = raw[column].where(~is_missing, None)
        if column not in s.NUMERIC_COLUMNS:
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        for index in raw.index[numbers.isna() & ~is_missing]:
            problems.append(
                Problem(
                    int(raw.at[index, LINE]), column, f"not a number: {raw.at[index, column]!r}"
                )
            )
        frame[column] = numbers.astype("float64")
    return frame, problems


def is_whole(series: pd.Series) -> pd.Series:
    return series == np.round(series)


def cell_schema(spec: s.CohortSpec) -> pa.DataFrameSchema:
    """Per-cell rules; each check's ``error`` is a message template with ``{value}``."""
    allowed_groups = ", ".join(s.GROUPS)
    allowed_subsets = ", ".join(spec.subsets)
    count_checks = [
        pa.Check.ge(0, error="negative count: {value:g}"),
        pa.Check(is_whole, error="not a whole number of cells: {value:g}"),
    ]
    fraction = pa.Check.in_range(
        0, 1, error="saturation must be a fraction between 0 and 1, got {value:g}"
    )
    columns = {
        "subject_id": pa.Column(object, nullable=False),
        "group": pa.Column(
            object,
            pa.Check.isin(s.GROUPS, error=f"unknown group {{value!r}} (allowed: {allowed_groups})"),
            nullable=False,
        ),
        "subset": pa.Column(
            object,
            pa.Check.isin(
                spec.subsets,
                error=f"unknown subset {{value!r}} (allowed: {allowed_subsets}; "
                "other subsets must be declared with --subsets)",
            ),
            nullable=False,
        ),
        "n_cells": pa.Column(
            float,
            [
                *count_checks,
                pa.Check.ne(
                    0, error="n_cells is 0: the gate holds no events, so no rate can be formed"
                ),
            ],
            nullable=True,
        ),
        "n_cd49d_pos": pa.Column(float, count_checks, nullable=True),
        s.PCT_COLUMN: pa.Column(
            float,
            pa.Check.in_range(0, 100, error="percentage outside 0-100: {value:g}"),
            nullable=True,
        ),
        s.EXACERBATION_COLUMN: pa.Column(
            float,
            pa.Check.isin([0, 1], error="exacerbation must be 0 or 1, got {value:g}"),
            nullable=True,
        ),
        "saturation_measured": pa.Column(float, fraction, nullable=True, required=False),
        **{
            column: pa.Column(
                float,
                pa.Check.gt(
                    0,
                    error="fluorescence must be above 0 (its logarithm is modelled), got {value:g}",
                ),
                nullable=True,
                required=False,
            )
            for column in s.MFI_COLUMNS
        },
        "age": pa.Column(
            float,
            pa.Check.in_range(0, 120, error="age outside 0-120 years: {value:g}"),
            nullable=True,
            required=False,
        ),
        "sex": pa.Column(
            object,
            pa.Check.isin(s.SEXES, error="sex must be F or M, got {value!r}"),
            nullable=True,
            required=False,
        ),
        "months_on_ntz": pa.Column(
            float,
            pa.Check.ge(0, error="negative duration: {value:g}"),
            nullable=True,
            required=False,
        ),
        "days_since_infusion": pa.Column(
            float,
            pa.Check.ge(0, error="negative duration: {value:g}"),
            nullable=True,
            required=False,
        ),
    }
    return pa.DataFrameSchema(columns, strict=False)


def cell_problems(frame: pd.DataFrame, spec: s.CohortSpec) -> list[Problem]:
    """Run the per-cell schema lazily and turn every failure case into a Problem."""
    try:
        cell_schema(spec).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        return [failure_to_problem(case, frame) for case in err.failure_cases.itertuples()]
    return []


def failure_to_problem(case, frame: pd.DataFrame) -> Problem:
    line = int(frame.at[case.index, LINE])
    if case.check == "not_nullable":
        return Problem(line, case.column, "blank or NaN in a required field")
    return Problem(line, case.column, str(case.check).format(value=case.failure_case))


# --- stage 4: relations within and across rows ----------------------------------------------


def row_problems(frame: pd.DataFrame) -> list[Problem]:
    """Rules that involve several columns of one row."""
    n_cells, n_pos, pct = frame["n_cells"], frame["n_cd49d_pos"], frame[s.PCT_COLUMN]
    exacerbation, group = frame[s.EXACERBATION_COLUMN], frame["group"]
    counts_pct = 100 * n_pos / n_cells.where(n_cells > 0)
    rules = [
        (
            n_cells.isna() & n_pos.isna() & pct.isna(),
            s.PCT_COLUMN,
            lambda r: "no measurement: give n_cells and n_cd49d_pos, or pct_cd49d_pos",
        ),
        (
            n_cells.isna() & n_pos.notna(),
            "n_cells",
            lambda r: "blank, but n_cd49d_pos is given: counts need both columns",
        ),
        (
            n_pos.isna() & n_cells.notna(),
            "n_cd49d_pos",
            lambda r: "blank, but n_cells is given: counts need both columns",
        ),
        (
            n_pos > n_cells,
            "n_cd49d_pos",
            lambda r: f"n_cd49d_pos ({r.n_cd49d_pos:g}) exceeds n_cells ({r.n_cells:g})",
        ),
        (
            (pct - counts_pct).abs() > s.PCT_AGREEMENT_TOLERANCE,
            s.PCT_COLUMN,
            lambda r: (
                f"{r.pct_cd49d_pos:g}% disagrees with the counts "
                f"({r.n_cd49d_pos:g}/{r.n_cells:g} = {100 * r.n_cd49d_pos / r.n_cells:.2f}%) "
                f"by more than {s.PCT_AGREEMENT_TOLERANCE:g} percentage points"
            ),
        ),
        (
            group.isin(s.GROUPS) & (group != s.TREATED_GROUP) & exacerbation.notna(),
            s.EXACERBATION_COLUMN,
            lambda r: f"must be blank outside {s.TREATED_GROUP} (this row's group is {r.group})",
        ),
    ]
    rules += mfi_pair_rules(frame)
    if "saturation_measured" in frame.columns:
        rules.append(
            (
                group.isin(s.GROUPS)
                & (group != s.TREATED_GROUP)
                & frame["saturation_measured"].notna(),
                "saturation_measured",
                lambda r: (
                    f"must be blank outside {s.TREATED_GROUP}: occupancy exists only "
                    f"under natalizumab (this row's group is {r.group})"
                ),
            )
        )
    return [
        Problem(int(row.source_line), column, describe(row))
        for mask, column, describe in rules
        for row in frame[mask.fillna(False).astype(bool)].itertuples()
    ]


def mfi_pair_rules(frame: pd.DataFrame) -> list[tuple]:
    """An MFI reading is the subset's median and its gate boundary: both or neither per row."""
    if not any(column in frame.columns for column in s.MFI_COLUMNS):
        return []
    mfi = frame.get(s.MFI_COLUMN, pd.Series(np.nan, index=frame.index))
    gate = frame.get(s.MFI_GATE_COLUMN, pd.Series(np.nan, index=frame.index))
    return [
        (
            column.isna() & other.notna(),
            name,
            lambda r, other_name=other_name: (
                f"blank, but {other_name} is given: an MFI reading needs both "
                f"{' and '.join(s.MFI_COLUMNS)}"
            ),
        )
        for column, name, other, other_name in (
            (mfi, s.MFI_COLUMN, gate, s.MFI_GATE_COLUMN),
            (gate, s.MFI_GATE_COLUMN, mfi, s.MFI_COLUMN),
        )
    ]


def cross_row_problems(frame: pd.DataFrame) -> list[Problem]:
    """Duplicates, subjects in two groups, subject-level values that differ between rows."""
    frame = frame[frame["subject_id"].notna()]
    problems = []
    keyed = frame[frame["subset"].notna()]
    first_line = keyed.drop_duplicates(["subject_id", "subset"]).set_index(
        ["subject_id", "subset"]
    )[LINE]
    for row in keyed[keyed.duplicated(["subject_id", "subset"])].itertuples():
        problems.append(
            Problem(
                int(row.source_line),
                "subset",
                f"duplicate row for subject {row.subject_id!r} and subset "
                f"{row.subset!r} (first at line "
                f"{first_line[(row.subject_id, row.subset)]})",
            )
        )
    for column in [c for c in s.SUBJECT_LEVEL_COLUMNS if c in frame.columns]:
        problems += subject_level_conflicts(frame, column)
    return problems


def subject_level_conflicts(frame: pd.DataFrame, column: str) -> list[Problem]:
    """Rows whose value of a per-subject column differs from the subject's first given value.

    Blank cells are not compared: a blank that matters (a required field) is reported on its own.
    """
    given = frame[frame[column].notna()]
    first = given.drop_duplicates("subject_id").set_index("subject_id")
    expected = given["subject_id"].map(first[column])
    differs = given[given[column] != expected]
    what = "is in two groups" if column == "group" else f"has two values of {column}"
    return [
        Problem(
            int(row.source_line),
            column,
            f"subject {row.subject_id!r} {what}: {fmt(getattr(row, column))} here, "
            f"{fmt(first.at[row.subject_id, column])} at line "
            f"{first.at[row.subject_id, LINE]}",
        )
        for row in differs.itertuples()
    ]


def fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "blank"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fraction_like_percentages(frame: pd.DataFrame) -> list[Problem]:
    """All percentages at or below 1 are almost surely fractions; say so once for the file."""
    pct = frame[s.PCT_COLUMN].dropna()
    if len(pct) and pct.max() <= 1 and pct.max() > 0:
        return [
            Problem(
                0,
                s.PCT_COLUMN,
                "every value is between 0 and 1: these look like "
                "fractions, but percentages (0-100) are expected; "
                "multiply by 100",
            )
        ]
    return []


def only_new_cells(problems: list[Problem], *, already: list[Problem]) -> list[Problem]:
    """Drop problems about a cell already reported (an unparsable count is not also 'blank')."""
    seen = {(p.line, p.column) for p in already}
    return [p for p in problems if (p.line, p.column) not in seen]


def without_reported_cells(frame: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    """Blank out cells already reported, so relations across rows are judged on valid values."""
    cleaned = frame.copy()
    row_of_line = pd.Series(frame.index, index=frame[LINE])
    for problem in problems:
        if problem.column in cleaned.columns and problem.line in row_of_line.index:
            cleaned.loc[row_of_line[problem.line], problem.column] = None
    return cleaned


# --- all stages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedFile:
    """A valid cohort file's typed rows and the unknown columns left out of them."""

    rows: pd.DataFrame
    ignored_columns: tuple[str, ...] = ()


def validate_file(path: Path | str, spec: s.CohortSpec) -> CheckedFile:
    """Validate a cohort CSV and return its typed rows.

    Parameters
    ----------
    path
        The CSV file.
    spec
        Allowed subsets and the reference subset.

    Returns
    -------
    CheckedFile
        ``rows``: one per subject x subset, numeric columns as float64, missing cells as
        NaN/None, every measurement column present (blank where the file has none);
        ``ignored_columns``: unknown columns, left out.

    Raises
    ------
    CohortFileError
        Listing every problem found, each with line and column.
    """
    path = Path(path)
    text, problems = read_text(path)
    if text is None:
        raise CohortFileError(path, problems)
    raw, ignored, problems = parse_csv(text)
    if problems:
        raise CohortFileError(path, problems)
    for column in (*s.MEASUREMENT_COLUMNS, s.EXACERBATION_COLUMN):
        if column not in raw.columns:
            raw[column] = ""
    frame, problems = typed_frame(raw)
    problems += cell_problems(frame, spec)
    problems += only_new_cells(
        row_problems(without_reported_cells(frame, problems)), already=problems
    )
    cleaned = without_reported_cells(frame, problems)
    problems += only_new_cells(cross_row_problems(cleaned), already=problems)
    problems += fraction_like_percentages(frame)
    if problems:
        raise CohortFileError(path, sorted(set(problems)))
    return CheckedFile(frame.drop(columns=LINE).reset_index(drop=True), ignored)
