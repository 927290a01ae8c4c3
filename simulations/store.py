"""The results store of a power run: one Parquet record per replicate, written atomically.

Layout under the output folder::

    manifest.json                      plan, its result hash, design-prior digest, versions
    records/<cell_id>/rep-000123.parquet    one file per replicate (rows: endpoint x analysis)
    datasets/<cell_id>/rep-000123.csv       with --save-datasets: the trial, cohort schema

A record is written to a temporary name and renamed, so a killed run leaves whole records or
none (and partial temporary files, which the end of the next run deletes); a rerun skips every
replicate whose record exists. A folder holding another plan's
results (a different result hash) is refused rather than mixed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from simulations.cohort import write_atomically


class StoreMismatch(ValueError):
    """The output folder holds results of a different plan."""


class Store:
    """Records of one plan's run under ``root``."""

    def __init__(self, root: Path | str, result_hash: str) -> None:
        self.root = Path(root)
        self.result_hash = result_hash

    def open(self, manifest: dict) -> None:
        """Create the folder, or check that it belongs to this plan.

        Raises
        ------
        StoreMismatch
            If ``manifest.json`` names another result hash.
        """
        path = self.root / "manifest.json"
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("result_hash") != self.result_hash:
                raise StoreMismatch(
                    f"{self.root} holds results of a different plan or design prior "
                    f"(result hash {str(stored.get('result_hash'))[:12]}, this plan "
                    f"{self.result_hash[:12]}); choose another --out folder"
                )
            return
        write_atomically(json.dumps(manifest, indent=2, sort_keys=True) + "\n", path)

    def record_path(self, cell_id: str, rep: int) -> Path:
        return self.root / "records" / cell_id / f"rep-{rep:06d}.parquet"

    def dataset_path(self, cell_id: str, rep: int) -> Path:
        return self.root / "datasets" / cell_id / f"rep-{rep:06d}.csv"

    def done(self, cell_id: str) -> set[int]:
        """Replicate indices of a cell whose records exist."""
        folder = self.root / "records" / cell_id
        if not folder.is_dir():
            return set()
        return {int(p.stem.removeprefix("rep-")) for p in folder.glob("rep-*.parquet")}

    def write_record(self, cell_id: str, rep: int, rows: pd.DataFrame) -> None:
        """Write one replicate's rows atomically (temporary file, then rename)."""
        path = self.record_path(cell_id, rep)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".rep-", suffix=".tmp")
        os.close(handle)
        try:
            rows.to_parquet(temporary, index=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def remove_temporaries(self) -> None:
        """Delete the partial files of records whose writing was killed (a run's end: no
        writer is left)."""
        for path in (self.root / "records").glob("*/.rep-*.tmp"):
            path.unlink(missing_ok=True)

    def records(self) -> pd.DataFrame:
        """Every stored record, sorted by cell, replicate, endpoint and analysis."""
        files = sorted((self.root / "records").glob("*/rep-*.parquet"))
        if not files:
            return pd.DataFrame()
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        keys = ["cell_id", "replicate", "endpoint", "analysis"]
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)
