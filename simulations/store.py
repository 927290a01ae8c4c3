"""The results store of a power run: one Parquet record per replicate, written atomically.

Layout under the output folder::

    manifest.json                      plan, its result hash, input digests, versions
    records/<cell_id>/rep-000123.parquet    one file per replicate (rows: endpoint x analysis)
    datasets/<cell_id>/rep-000123.csv       with --save-datasets: the trial, cohort schema

A record is written to a temporary name and renamed, so a killed run leaves whole records or
none (and partial temporary files, which the end of the next run deletes); a rerun skips every
replicate whose record exists. A folder holding another plan's results (a different result
hash), or results made from another cohort configuration or other code (``inputs`` digests), is
refused rather than mixed, with a message naming what changed; with ``replace_stale`` (the
command's ``--replace-stale``, which the pipeline uses) its results are deleted and the run
starts afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from simulations.atomic import replacing, write_atomically


class StoreMismatch(ValueError):
    """The output folder holds results of a different plan."""


#: What each input digest of a manifest stands for, in a refusal message.
INPUT_NAMES = {
    "cohort_config": "the cohort configuration file's contents",
    "code": "the model and simulation code (package version or source files)",
}


def changed_inputs(stored: dict, current: dict) -> list[str]:
    """Which inputs of a stored run differ from the current one, in words."""
    changed = []
    if stored.get("result_hash") != current.get("result_hash"):
        changed.append(
            f"the plan or design prior changed (result hash {str(stored.get('result_hash'))[:12]}"
            f", this plan {str(current.get('result_hash'))[:12]})"
        )
    if "inputs" not in stored:
        return [*changed, "the stored run predates input digests"]
    for key, words in INPUT_NAMES.items():
        if stored["inputs"].get(key) != current.get("inputs", {}).get(key):
            changed.append(f"{words} changed")
    return changed


def remove_entries(root: Path, names) -> None:
    """Delete the files and folders ``names`` under ``root`` where they exist."""
    for name in names:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class Store:
    """Records of one plan's run under ``root``.

    ``derived``: the names of what a run writes beside its records (tables, figures, variant
    folders), deleted with them when stale results are replaced.
    """

    #: What the store itself writes under ``root``.
    OWN_ENTRIES = ("manifest.json", "records", "datasets")

    def __init__(self, root: Path | str, result_hash: str, derived: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.result_hash = result_hash
        self.derived = derived

    def open(self, manifest: dict, *, replace_stale: bool = False) -> list[str]:
        """Create the folder, or check that it belongs to this plan and these inputs.

        With ``replace_stale``, a folder of other inputs has its results deleted and is
        started afresh. Returns what changed (empty when the folder is new or current).

        Raises
        ------
        StoreMismatch
            If ``manifest.json`` names another result hash or other input digests
            (``manifest["inputs"]``: the cohort configuration's contents, the code), saying
            which input changed, and ``replace_stale`` is false.
        """
        path = self.root / "manifest.json"
        changed = []
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            changed = changed_inputs(stored, {**manifest, "result_hash": self.result_hash})
            if not changed:
                if stored != manifest:  # the same results, a grid grown or shrunk: say so
                    write_atomically(json.dumps(manifest, indent=2, sort_keys=True) + "\n", path)
                return []
            if not replace_stale:
                raise StoreMismatch(
                    f"{self.root} holds results of other inputs: {'; '.join(changed)}. "
                    "Choose another --out folder (or remove this one, or --replace-stale)"
                )
            remove_entries(self.root, (*self.OWN_ENTRIES, *self.derived))
        write_atomically(json.dumps(manifest, indent=2, sort_keys=True) + "\n", path)
        return changed

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
        with replacing(self.record_path(cell_id, rep), prefix=".rep-") as temporary:
            rows.to_parquet(temporary, index=False)

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
