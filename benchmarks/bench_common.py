"""Helpers shared by the benchmark scripts: compile caches, child processes, tables, machine.

Not a benchmark itself. ``power_throughput.py`` and its helper modules import it (the scripts'
folder is on ``sys.path`` when a script runs, and spawned workers inherit that path).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A child process reports its result as one line starting with this, followed by JSON.
RESULT_PREFIX = "BENCHMARK_RESULT "


def cache_environment(cache_root: Path | None) -> dict[str, str]:
    """This process's environment, with PyTensor's and JAX's compile caches under ``cache_root``.

    PyTensor keeps compiled C and Numba code under ``base_compiledir`` and the batch backend
    keeps compiled XLA programs under ``CD49D_JAX_CACHE`` (``models.batch``), both across
    processes; an empty folder for each makes a child compile from scratch. ``None`` keeps
    the user's caches (``--warm-cache``).
    """
    env = dict(os.environ)
    if cache_root is None:
        return env
    flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f]
    env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={cache_root / 'pytensor'}"])
    env["CD49D_JAX_CACHE"] = str(cache_root / "jax")
    return env


def run_child(
    arguments: list[str], *, env: dict[str, str], timeout: float, capture: bool
) -> subprocess.CompletedProcess:
    """Run ``python ARGUMENTS`` from the repository root; stdout captured or passed through.

    Raises
    ------
    subprocess.TimeoutExpired
        If the child runs past ``timeout`` seconds (it is killed).
    """
    return subprocess.run(
        [sys.executable, *arguments],
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )


def print_result(result: dict) -> None:
    """Child side: print the one result line the parent parses."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(completed: subprocess.CompletedProcess, prefix: str = RESULT_PREFIX) -> dict:
    """Parent side: the child's result line (starting with ``prefix``), or an error naming
    its exit status and last stderr line."""
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(prefix):
            return json.loads(line.removeprefix(prefix))
    stderr_lines = completed.stderr.strip().splitlines()
    last = stderr_lines[-1] if stderr_lines else "(no stderr)"
    return {
        "error_type": "ChildProcessError",
        "error_message": f"exit status {completed.returncode}: {last}",
    }


def format_value(value) -> str:
    """Table text: None as '-', booleans as yes/no, floats to 4 significant digits below 1,
    2 decimals below 10 and 1 decimal above."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        size = abs(value)
        return f"{value:.4g}" if size < 1 else f"{value:.2f}" if size < 10 else f"{value:.1f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A fixed-width text table of dict rows (``columns``: which keys, default the first
    row's)."""
    columns = columns or list(rows[0])
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def write_csv(rows: list[dict], path: Path, columns: list[str]) -> None:
    """Write ``columns`` of every row (missing values blank), creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def package_versions(names) -> list[str]:
    """``NAME VERSION`` of each installed package, ``NAME (not installed)`` otherwise."""
    from importlib import metadata

    versions = []
    for name in names:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return versions


def machine_facts() -> list[str]:
    """CPU count, load, platform and the versions of the samplers' libraries."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = package_versions(("pymc", "pytensor", "nutpie", "jax", "blackjax", "arviz"))
    return [
        f"os.cpu_count(): {os.cpu_count()}",
        f"load average (1, 5, 15 min): {load}",
        f"platform: {platform.platform()}",
        f"python: {platform.python_version()}",
        ", ".join(versions),
    ]
