"""FlowJo table-editor exports to a cohort file (``cd49d import-flowjo``).

FlowJo's table editor writes one row per FCS file (first column the sample name, unnamed; two
trailing rows ``Mean`` and ``SD``) and one column per statistic, named ``GATE/PATH | STATISTIC``:
``Count``, ``Freq. of Parent (%)`` or ``Median (COMP-CHANNEL :: MARKER)``. Three files make a
cohort:

- the **table**;
- a **sample sheet** (CSV): ``sample`` (the table's sample name), ``subject_id``, ``group`` and
  any subject-level column of the schema (``exacerbation``, ``patient_id``, covariates);
- a **gates file** (TOML): one ``[subsets.NAME]`` table per subset with ``parent`` (the subset's
  gate path), ``positive`` (its CD49d+ child gate) and optionally, together, ``mfi`` (the full
  column name of the subset's CD49d median, over all cells of the parent gate) and
  ``gate_value`` (the CD49d+ gate's lower edge, in the same fluorescence units).

Per sample and subset, ``n_cells`` is the parent gate's count, ``n_cd49d_pos`` the positive
gate's and ``pct_cd49d_pos`` the positive gate's frequency of parent, each where the table has
it (a percentage-only export gives the percentage alone). Where the gates file gives ``mfi`` and
``gate_value``, ``mfi_cd49d`` is the table's median cell and ``mfi_gate`` the ``gate_value``
(both blank on a row whose median cell is blank). The rows then go through the one validator
(``models.validation``); its problems are reported where they arise: the table's, the sheet's or
the gates file's line and column (``mfi_gate``'s at the ``gate_value`` key).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from models import schema as s
from models.validation import CohortFileError, Problem, read_text, validate_file

STATISTIC_SEPARATOR = " | "
COUNT = "Count"
FREQUENCY_OF_PARENT = ("Freq. of Parent (%)", "Freq. of Parent")
#: Summary rows FlowJo appends below the samples.
SUMMARY_ROWS = frozenset({"Mean", "SD"})
SAMPLE = "sample"
GATE_KEYS = ("parent", "positive", "mfi", "gate_value")
#: The two gates-file keys of an MFI reading, and what each is, for the message when one is
#: given without the other.
MFI_KEYS = {
    "mfi": "the subset's CD49d median (the full name of the table's median column)",
    "gate_value": (
        "the gate's boundary value (the CD49d+ gate's lower edge, in the units of the 'mfi' column)"
    ),
}
#: The cohort's measurement columns, and whether each is a whole number.
MEASUREMENTS = (("n_cells", True), ("n_cd49d_pos", True), (s.PCT_COLUMN, False))
#: Suggestions offered for a name that matches nothing.
SUGGESTIONS = 3


@dataclass(frozen=True)
class Located:
    """One problem in one of the three input files."""

    path: Path
    line: int
    column: str
    message: str
    what: str = "column"

    def render(self) -> str:
        """``FILE:LINE: column 'C': what is wrong`` (``key`` for the gates file)."""
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        column = f" {self.what} '{self.column}':" if self.column else ""
        return f"{where}:{column} {self.message}"


class FlowJoImportError(Exception):
    """The three files do not make a valid cohort; ``problems`` lists every problem."""

    def __init__(self, problems: list[Located]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


@dataclass(frozen=True)
class SubsetGates:
    """The gates of one subset, and the gates file's lines that name them."""

    subset: str
    parent: str
    positive: str
    mfi: str | None
    gate_value: float | None
    lines: dict[str, int]


@dataclass
class Table:
    """A CSV file as a header and rows of stripped cells, each with its line number."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]
    header_line: int = 1


@dataclass
class Imported:
    """The cohort's CSV text (without the sheet's unknown columns), its size and what each
    subset was measured by."""

    text: str
    rows: int
    samples: int
    measured: dict[str, str]  # subset -> "counts and percentage" / "counts" / "percentage"
    ignored_columns: tuple[str, ...] = ()


# --- reading the three files -------------------------------------------------------------------


def read_table(path: Path) -> tuple[Table | None, list[Located]]:
    """A CSV file's non-blank rows; problems with the file itself or its shape."""
    text, problems = read_text(path)
    if text is None:
        return None, [Located(path, p.line, p.column, p.message) for p in problems]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader]
    except csv.Error as err:
        return None, [Located(path, reader.line_num, "", f"not valid CSV: {err}")]
    rows = [(n, row) for n, row in rows if any(row)]
    if len(rows) < 2:
        return None, [Located(path, 0, "", "file has a header but no data rows")]
    (header_line, header), body = rows[0], rows[1:]
    problems = [
        Located(path, n, "", f"expected {len(header)} fields as in the header, found {len(row)}")
        for n, row in body
        if len(row) != len(header)
    ]
    return Table(path, header, body, header_line), problems


def without_summary_rows(table: Table) -> Table:
    """The table without FlowJo's ``Mean`` and ``SD`` rows."""
    rows = [(n, row) for n, row in table.rows if row[0] not in SUMMARY_ROWS]
    return Table(table.path, table.header, rows, table.header_line)


def read_gates(path: Path, spec: s.CohortSpec) -> tuple[list[SubsetGates], list[Located]]:
    """The ``[subsets.NAME]`` tables of a gates file."""
    text, problems = read_text(path)
    if text is None:
        return [], [Located(path, p.line, p.column, p.message, "key") for p in problems]
    try:
        content = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = int(match.group(1)) if (match := re.search(r"line (\d+)", str(err))) else 0
        return [], [Located(path, line, "", f"not valid TOML: {err}")]
    subsets = content.get("subsets")
    if not isinstance(subsets, dict) or not subsets:
        return [], [Located(path, 0, "", "no [subsets.NAME] tables: give one per T-cell subset")]
    gates, problems = [], []
    for name, table in subsets.items():
        lines = {key: key_line(text, name, key) for key in (*GATE_KEYS, "")}
        found = subset_gate_problems(path, name, table, lines, spec)
        problems += found
        if not found:
            gates.append(
                SubsetGates(
                    name,
                    table["parent"],
                    table["positive"],
                    table.get("mfi"),
                    table.get("gate_value"),
                    lines,
                )
            )
    return gates, problems


def subset_gate_problems(
    path: Path, name: str, table: object, lines: dict[str, int], spec: s.CohortSpec
) -> list[Located]:
    """What is wrong with one ``[subsets.NAME]`` table."""
    key = f"subsets.{name}"
    if name not in spec.subsets:
        return [
            Located(
                path,
                lines[""],
                key,
                f"unknown subset {name!r} (allowed: {', '.join(spec.subsets)}; other subsets "
                "must be declared with --subsets)",
                "key",
            )
        ]
    if not isinstance(table, dict):
        return [Located(path, lines[""], key, "must be a table with parent and positive", "key")]
    problems = [
        Located(path, lines[""], f"{key}.{k}", "missing: give the gate path", "key")
        for k in ("parent", "positive")
        if not isinstance(table.get(k), str) or not table.get(k).strip()
    ]
    problems += [
        Located(
            path, lines[""], f"{key}.{k}", f"unknown key (allowed: {', '.join(GATE_KEYS)})", "key"
        )
        for k in table
        if k not in GATE_KEYS
    ]
    problems += mfi_key_problems(path, key, table, lines)
    if problems:
        return problems
    parent, positive = table["parent"].strip("/"), table["positive"].strip("/")
    if not positive.startswith(parent + "/"):
        return [
            Located(
                path,
                lines["positive"],
                f"{key}.positive",
                f"gate {positive!r} is not under the parent gate {parent!r}: the CD49d+ gate "
                "must be a child of the subset's gate",
                "key",
            )
        ]
    return []


def mfi_key_problems(path: Path, key: str, table: dict, lines: dict[str, int]) -> list[Located]:
    """``mfi`` and ``gate_value``: a column name and a finite number, both or neither.

    A ``gate_value`` of 0 or below is left to the validator, whose message for ``mfi_gate`` is
    placed back at this key.
    """
    given = [k for k in MFI_KEYS if k in table]
    if len(given) == 1:
        (present,), (absent,) = given, [k for k in MFI_KEYS if k not in table]
        message = f"missing: {present!r} is given, and an MFI reading needs {MFI_KEYS[absent]}"
        return [Located(path, lines[""], f"{key}.{absent}", message, "key")]
    problems = []
    mfi, gate_value = table.get("mfi"), table.get("gate_value")
    if "mfi" in table and (not isinstance(mfi, str) or not mfi.strip()):
        message = f"must be the full name of the table's median column, got {mfi!r}"
        problems.append(Located(path, lines["mfi"], f"{key}.mfi", message, "key"))
    is_number = isinstance(gate_value, int | float) and not isinstance(gate_value, bool)
    if "gate_value" in table and not (is_number and math.isfinite(gate_value)):
        message = (
            "must be a number above 0 (the CD49d+ gate's lower edge, in the units of the 'mfi' "
            f"column), got {gate_value!r}"
        )
        problems.append(Located(path, lines["gate_value"], f"{key}.gate_value", message, "key"))
    return problems


def key_line(text: str, subset: str, key: str) -> int:
    """The line of ``key`` in ``[subsets.SUBSET]`` (of the table header when ``key`` is empty)."""
    header = re.compile(rf"^\s*\[\s*subsets\.\"?{re.escape(subset)}\"?\s*\]")
    inside, header_line = False, 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            inside = bool(header.match(line))
            header_line = number if inside else header_line
            if inside and not key:
                return number
        elif inside and key and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return header_line


# --- the table's columns -----------------------------------------------------------------------


def statistic_column(header: list[str], gate: str, statistics: tuple[str, ...]) -> str | None:
    """The column holding one of ``statistics`` of ``gate``, if the table has one."""
    for statistic in statistics:
        name = f"{gate}{STATISTIC_SEPARATOR}{statistic}"
        if name in header:
            return name
    return None


def closest(name: str, candidates: list[str]) -> str:
    """`` (closest: 'a', 'b')`` or an empty string."""
    matches = difflib.get_close_matches(name, candidates, n=SUGGESTIONS, cutoff=0.4)
    return f" (closest: {', '.join(repr(m) for m in matches)})" if matches else ""


@dataclass(frozen=True)
class SubsetColumns:
    """The table's columns that measure one subset."""

    gates: SubsetGates
    n_cells: str | None
    n_cd49d_pos: str | None
    pct: str | None
    mfi: str | None

    @property
    def has_counts(self) -> bool:
        return self.n_cells is not None and self.n_cd49d_pos is not None

    def measured(self) -> str:
        """``counts``, ``percentage`` and ``MFI``, as far as the table has them."""
        kinds = ["counts"] * self.has_counts + ["percentage"] * (self.pct is not None)
        kinds += ["MFI"] * (self.mfi is not None)
        return " and ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 2 else kinds)


def subset_columns(
    table: Table, gates: SubsetGates, gates_path: Path
) -> tuple[SubsetColumns | None, list[Located]]:
    """Find a subset's count, percentage and MFI columns, or say which gate matches nothing."""
    header = table.header
    parent, positive = gates.parent.strip("/"), gates.positive.strip("/")
    columns = SubsetColumns(
        gates,
        statistic_column(header, parent, (COUNT,)),
        statistic_column(header, positive, (COUNT,)),
        statistic_column(header, positive, FREQUENCY_OF_PARENT),
        gates.mfi,
    )
    key = f"subsets.{gates.subset}"
    problems = []
    if gates.mfi is not None and gates.mfi not in header:
        problems.append(
            Located(
                gates_path,
                gates.lines["mfi"],
                f"{key}.mfi",
                f"no column {gates.mfi!r} in {table.path}{closest(gates.mfi, header[1:])}",
                "key",
            )
        )
    if columns.has_counts or columns.pct is not None:
        return (None if problems else columns), problems
    paths = sorted({c.split(STATISTIC_SEPARATOR)[0] for c in header[1:]})
    for gate_key, gate in (("parent", parent), ("positive", positive)):
        if not any(c.startswith(gate + STATISTIC_SEPARATOR) for c in header):
            problems.append(
                Located(
                    gates_path,
                    gates.lines[gate_key],
                    f"{key}.{gate_key}",
                    f"gate path {gate!r} matches no column of {table.path}{closest(gate, paths)}",
                    "key",
                )
            )
    if not problems:
        problems.append(
            Located(
                gates_path,
                gates.lines[""],
                key,
                f"{table.path} has neither '{parent} | {COUNT}' and '{positive} | {COUNT}' nor "
                f"'{positive} | {FREQUENCY_OF_PARENT[0]}': no measurement of {gates.subset}",
                "key",
            )
        )
    return None, problems


# --- cells -------------------------------------------------------------------------------------


def cell_text(
    table: Table, line: int, row: list[str], column: str, *, whole: bool
) -> tuple[str, list[Located]]:
    """A numeric cell as cohort-file text ('' when blank), or why it is not one."""
    value = row[table.header.index(column)]
    if value.lower() in s.MISSING_TEXTS:
        return "", []
    try:
        number = float(value)
    except ValueError:
        return "", [Located(table.path, line, column, f"not a number: {value!r}")]
    if whole:
        if number != round(number):
            return "", [Located(table.path, line, column, f"not a whole number: {value}")]
        return str(round(number)), []
    return value, []


# --- matching samples --------------------------------------------------------------------------


def sheet_by_sample(sheet: Table) -> tuple[dict[str, tuple[int, dict[str, str]]], list[Located]]:
    """The sheet's rows keyed by sample name; its header and duplicate-sample problems."""
    problems = [
        Located(sheet.path, sheet.header_line, name, "required column is missing")
        for name in (SAMPLE, "subject_id", "group")
        if name not in sheet.header
    ]
    if problems:
        return {}, problems
    rows, subjects = {}, {}
    for line, row in sheet.rows:
        if len(row) != len(sheet.header):
            continue  # reported when the sheet was read
        record = dict(zip(sheet.header, row, strict=True))
        sample, subject = record.pop(SAMPLE), record["subject_id"]
        if not sample:
            problems.append(
                Located(sheet.path, line, SAMPLE, "blank: give the table's sample name")
            )
        elif sample in rows:
            first = rows[sample][0]
            message = f"sample {sample!r} appears twice (first at line {first})"
            problems.append(Located(sheet.path, line, SAMPLE, message))
        elif subject and subject in subjects:
            message = (
                f"subject {subject!r} is given two samples (first at line {subjects[subject]}); "
                "samples of one patient (before and under natalizumab) need their own "
                "subject_id and a shared patient_id"
            )
            problems.append(Located(sheet.path, line, "subject_id", message))
        else:
            rows[sample] = (line, record)
            subjects.setdefault(subject, line)
    return rows, problems


def unmatched_samples(table: Table, sheet: Table, by_sample: dict) -> list[Located]:
    """Samples in the table but not the sheet, and the reverse."""
    in_table = [row[0] for _, row in table.rows]
    sample_column = table.header[0] or "sample name"
    problems = [
        Located(
            table.path,
            line,
            sample_column,
            f"sample {row[0]!r} is not in {sheet.path}{closest(row[0], list(by_sample))}",
        )
        for line, row in table.rows
        if row[0] not in by_sample
    ]
    problems += [
        Located(
            sheet.path,
            line,
            SAMPLE,
            f"sample {sample!r} is not in {table.path}{closest(sample, in_table)}",
        )
        for sample, (line, _) in by_sample.items()
        if sample not in in_table
    ]
    return problems


# --- the import --------------------------------------------------------------------------------


@dataclass
class SourceMap:
    """Where each cell of the built cohort came from: (file, line, column or key, ``column`` or
    ``key``) per (line, column)."""

    header: tuple[Path, int]  # the sheet's header: the cohort's columns other than measurements
    cells: dict[tuple[int, str], tuple[Path, int, str, str]] = field(default_factory=dict)
    rows: dict[int, tuple[Path, int]] = field(default_factory=dict)

    def locate(self, problem: Problem, fallback: Path) -> Located:
        """The problem of a cohort line and column, placed where its value came from."""
        if problem.line == 1:
            return Located(*self.header, problem.column, problem.message)
        if (problem.line, problem.column) in self.cells:
            path, line, column, what = self.cells[(problem.line, problem.column)]
            return Located(path, line, column, problem.message, what)
        if problem.line in self.rows:
            path, line = self.rows[problem.line]
            return Located(path, line, problem.column, problem.message)
        return Located(fallback, 0, problem.column, problem.message)


def import_flowjo(
    table_path: Path, sheet_path: Path, gates_path: Path, spec: s.CohortSpec
) -> Imported:
    """Build a cohort file's text from a FlowJo table, a sample sheet and a gates file.

    Raises
    ------
    FlowJoImportError
        Listing every problem, each at its file, line and column.
    """
    table, problems = read_table(table_path)
    sheet, sheet_problems = read_table(sheet_path)
    gates, gate_problems = read_gates(gates_path, spec)
    problems += sheet_problems + gate_problems
    if table is None or sheet is None or problems:
        raise FlowJoImportError(problems)
    table = without_summary_rows(table)
    columns = []
    for subset_gates in gates:
        found, column_problems = subset_columns(table, subset_gates, gates_path)
        problems += column_problems
        columns.append(found)
    by_sample, sample_problems = sheet_by_sample(sheet)
    problems += sample_problems
    if problems:
        raise FlowJoImportError(problems)
    problems += unmatched_samples(table, sheet, by_sample)
    frame, sources, cell_problems = cohort_frame(table, sheet, by_sample, columns, gates_path)
    problems += cell_problems
    if problems:
        raise FlowJoImportError(problems)
    ignored = validated(csv_text(frame), spec, sources, table_path)
    samples = sum(row[0] in by_sample for _, row in table.rows)
    return Imported(
        csv_text(frame.drop(columns=list(ignored))),
        rows=len(frame),
        samples=samples,
        measured={c.gates.subset: c.measured() for c in columns},
        ignored_columns=ignored,
    )


def cohort_frame(
    table: Table,
    sheet: Table,
    by_sample: dict[str, tuple[int, dict[str, str]]],
    columns: list[SubsetColumns],
    gates_path: Path,
) -> tuple[pd.DataFrame, SourceMap, list[Located]]:
    """One cohort row per matched sample and subset (cells as text), and where each cell came
    from."""
    subject_columns = [c for c in sheet.header if c != SAMPLE]
    mfi = list(s.MFI_COLUMNS) if any(c.mfi is not None for c in columns) else []
    rest = [c for c in subject_columns if c not in ("subject_id", "group")]
    header = ["subject_id", "group", "subset", *(m for m, _ in MEASUREMENTS), *mfi, *rest]
    sources, problems, records = SourceMap((sheet.path, sheet.header_line)), [], []
    for line, row in table.rows:
        if row[0] not in by_sample:
            continue
        sheet_line, subject = by_sample[row[0]]
        for found in columns:
            cohort_line = len(records) + 2
            measured, cells, cell_problems = measurement_cells(table, line, row, found, gates_path)
            problems += cell_problems
            records.append(dict(subject) | {"subset": found.gates.subset} | measured)
            sources.cells |= {(cohort_line, name): cell for name, cell in cells.items()}
            for name in subject_columns:
                sources.cells[(cohort_line, name)] = (sheet.path, sheet_line, name, "column")
            subset_line = found.gates.lines[""]
            sources.cells[(cohort_line, "subset")] = (gates_path, subset_line, "subset", "column")
            sources.rows[cohort_line] = (table.path, line)
    return pd.DataFrame(records, columns=header), sources, problems


def measurement_cells(
    table: Table, line: int, row: list[str], found: SubsetColumns, gates_path: Path
) -> tuple[dict[str, str], dict[str, tuple[Path, int, str, str]], list[Located]]:
    """One table row's measurements of one subset as cohort cells (text), where each came from,
    and the cells that are not numbers.

    ``mfi_gate`` is the gates file's ``gate_value`` on a row whose median cell is not blank: a
    sample without a median has no MFI reading (both blank).
    """
    source_columns = {"n_cells": found.n_cells, "n_cd49d_pos": found.n_cd49d_pos}
    source_columns |= {s.PCT_COLUMN: found.pct, s.MFI_COLUMN: found.mfi}
    cells, sources, problems = {}, {}, []
    for name, whole in (*MEASUREMENTS, (s.MFI_COLUMN, False)):
        source = source_columns[name]
        if source is None:
            continue
        cells[name], cell_problems = cell_text(table, line, row, source, whole=whole)
        problems += cell_problems
        sources[name] = (table.path, line, source, "column")
    if cells.get(s.MFI_COLUMN):
        gates = found.gates
        cells[s.MFI_GATE_COLUMN] = str(gates.gate_value)
        key = f"subsets.{gates.subset}.gate_value"
        sources[s.MFI_GATE_COLUMN] = (gates_path, gates.lines["gate_value"], key, "key")
    return cells, sources, problems


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def validated(text: str, spec: s.CohortSpec, sources: SourceMap, table_path: Path) -> tuple:
    """Run the one validator on the built cohort; its problems placed at their sources."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cohort.csv"
        path.write_text(text, encoding="utf-8")
        try:
            return validate_file(path, spec).ignored_columns
        except CohortFileError as err:
            located = [sources.locate(p, table_path) for p in err.problems]
            raise FlowJoImportError(sorted(set(located), key=sort_key)) from None


def sort_key(problem: Located) -> tuple:
    return (str(problem.path), problem.line, problem.column, problem.message)
