"""Write data/examples/: a FlowJo-style table, sample sheet and gates file made from the bundled
SIMULATED cohort (12 of its subjects), as the example of `cd49d import-flowjo`.

The counts are the simulated cohort's; the parent gates' names and the sample names are
invented. The MFI columns (each subset's median CD49d over all cells of its gate) are simulated
from the latent-expression model: a cell's log CD49d is Normal(mu, sigma) with the CD49d+ gate's
boundary at log 0, so the positive rate p is Phi(mu / sigma) and the median relative to the gate
is exp(mu) = exp(sigma * Phi^-1(p)). Per sample and subset,

    mfi = gate_value * exp(sigma * Phi^-1(p) + e),   e ~ Normal(0, MFI_LOG_SD),

with p the row's n_cd49d_pos / n_cells, sigma the bundled cohort's (SIGMA), gate_value per subset
(GATE_VALUES, written to the gates file) and e a measurement error drawn from MFI_SEED; rounded to
one decimal as FlowJo shows medians. Run from the repository root:
`python scripts/make_flowjo_example.py`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "examples"
SUBJECTS = [
    *[f"HC0{i}" for i in (1, 2, 3)],
    *[f"MSN0{i}" for i in (1, 2, 3, 4, 5)],
    *[f"NTZ0{i}" for i in (1, 2, 3, 7)],
]
GATES = {
    "Th1": "Lymphocytes/Single Cells/CD4+/CXCR3+ CCR6-",
    "Th17": "Lymphocytes/Single Cells/CD4+/CXCR3- CCR6+",
    "Treg": "Lymphocytes/Single Cells/CD4+/CD25+ CD127lo",
}
MFI = "Median (Comp-BV421-A :: CD49d)"
#: The CD49d+ gate's lower edge per subset, in the MFI's (linear, compensated) units.
GATE_VALUES = {"Th1": 1000, "Th17": 1000, "Treg": 800}
#: SD of log CD49d within a gate: `sigma` of simulations/configs/kimura2016_cohort.toml, from
#: which the bundled cohort was drawn.
SIGMA = 1.5
#: Log-scale SD of an MFI measurement: a within-lab CV of about 10% (Vogt et al. 1991, Cytometry
#: 12:525, within-lab CVs of 3.0-9.9%).
MFI_LOG_SD = 0.1
MFI_SEED = 2016


def median_mfi(positive_rate: float, *, gate_value: float, rng: np.random.Generator) -> float:
    """A subset's median CD49d fluorescence given its positive rate (module docstring)."""
    location = SIGMA * norm.ppf(positive_rate) + rng.normal(0.0, MFI_LOG_SD)
    return gate_value * float(np.exp(location))


def table(cohort: pd.DataFrame, *, rng: np.random.Generator) -> list[list[str]]:
    """One row per sample; per subset the parent count, the CD49d+ count and frequency and
    the parent's CD49d median; then FlowJo's Mean and SD rows."""
    header = [""]
    for path in GATES.values():
        header += [f"{path} | Count", f"{path}/CD49d+ | Count"]
        header += [f"{path}/CD49d+ | Freq. of Parent (%)", f"{path} | {MFI}"]
    rows = []
    for number, subject in enumerate(SUBJECTS, start=1):
        row = [f"Specimen_{number:03d}_{subject}.fcs"]
        for subset in GATES:
            cells = cohort[(cohort.subject_id == subject) & (cohort.subset == subset)].iloc[0]
            fraction = cells.n_cd49d_pos / cells.n_cells
            row += [str(cells.n_cells), str(cells.n_cd49d_pos), f"{100 * fraction:.2f}"]
            mfi = median_mfi(fraction, gate_value=GATE_VALUES[subset], rng=rng)
            row += [f"{mfi:.1f}"]
        rows.append(row)
    values = np.array([[float(v) for v in row[1:]] for row in rows])
    rows.append(["Mean", *(f"{v:.6g}" for v in values.mean(axis=0))])
    rows.append(["SD", *(f"{v:.6g}" for v in values.std(axis=0, ddof=1))])
    return [header, *rows]


def sheet(cohort: pd.DataFrame) -> list[list[str]]:
    subjects = cohort.drop_duplicates("subject_id").set_index("subject_id")
    rows = [["sample", "subject_id", "group", "exacerbation", "notes"]]
    for number, subject in enumerate(SUBJECTS, start=1):
        group, events = subjects.at[subject, "group"], subjects.at[subject, "exacerbation"]
        event = "" if pd.isna(events) else str(int(events))
        rows.append([f"Specimen_{number:03d}_{subject}.fcs", subject, group, event, ""])
    rows[1][-1] = "tube relabelled"
    return rows


def gates() -> str:
    lines = ["# Gate paths of the example FlowJo table (data/examples/flowjo_table.csv)."]
    for subset, path in GATES.items():
        lines += ["", f"[subsets.{subset}]", f'parent = "{path}"', f'positive = "{path}/CD49d+"']
        lines += [f'mfi = "{path} | {MFI}"', f"gate_value = {GATE_VALUES[subset]}"]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[list[str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def main() -> None:
    cohort = pd.read_csv(ROOT / "data" / "kimura2016_simulated.csv")
    OUT.mkdir(exist_ok=True)
    write_csv(table(cohort, rng=np.random.default_rng(MFI_SEED)), OUT / "flowjo_table.csv")
    write_csv(sheet(cohort), OUT / "flowjo_samples.csv")
    (OUT / "flowjo_gates.toml").write_text(gates(), encoding="utf-8")


if __name__ == "__main__":
    main()
