"""The build manifest, ``paper/manifest.json``: every output of the pipeline and what made it.

For every output file the Snakefile declares (the results tree, ``paper/generated/numbers.json``,
``paper/figures/*``, ``paper/manuscript.pdf``): its SHA-256 and size, the rule and shell command
that wrote it and its input files with their SHA-256, as snakemake recorded them when it ran
the job (``snakemake --detailed-summary``); for outputs made from power plans
(``simulations/plans/*.toml``) each plan's SHA-256 and ``root_seed``. Once per manifest: the
pipeline's configuration (scale, results folder, sizes) and its hash, the cores, the hashes of
the Snakefile, ``pipeline.yaml`` and ``uv.lock``, every package version pinned in ``uv.lock``,
the Python version, and the git commit with ``dirty`` set when the work tree differed from it
(changed or untracked files that git does not ignore). The JSON has sorted keys and no time
stamps: the same build gives the same bytes. ``cd49d verify`` (``analysis/verify.py``)
rebuilds the pipeline and compares the rebuild with it.

Usage, from the tree root after a build (the Snakefile's ``manifest`` rule runs it):
``python -m analysis.manifest OUTPUT [--config-json JSON] [--cores N]``
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

#: Bumped when the manifest's layout changes.
MANIFEST_FORMAT = 1
#: Where the pipeline writes the manifest, relative to the tree root.
MANIFEST_PATH = "paper/manifest.json"
#: The Snakefile's rule that writes the manifest: its output is not listed in the manifest.
MANIFEST_RULE = "manifest"
#: Files of the pipeline itself, hashed once per manifest.
PIPELINE_FILES = ("Snakefile", "pipeline.yaml", "uv.lock")
PLANS_FOLDER = "simulations/plans/"
SUMMARY_HEADER = "output_file\tdate\trule\tlog-file(s)\tinput-file(s)\tshellcmd\tstatus\tplan"


class ManifestError(Exception):
    """The manifest cannot be written: the pipeline cannot be listed or an output is missing."""


@dataclass(frozen=True)
class JobOutput:
    """One output file of the pipeline with the rule, inputs and command snakemake recorded.

    ``inputs`` and ``command`` are None where snakemake has no record of the job (an output
    it did not write itself).
    """

    path: str
    rule: str
    inputs: tuple[str, ...] | None
    command: str | None


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_detailed_summary(text: str) -> list[JobOutput]:
    """The outputs listed by ``snakemake --detailed-summary`` (tab-separated, after its header).

    Raises
    ------
    ManifestError
        If the text holds no summary header.
    """
    lines = text.splitlines()
    if SUMMARY_HEADER not in lines:
        raise ManifestError("snakemake --detailed-summary printed no summary")
    outputs = []
    for line in lines[lines.index(SUMMARY_HEADER) + 1 :]:
        fields = line.split("\t")
        if len(fields) < 8:
            continue
        inputs, command = fields[4], "\t".join(fields[5:-2])
        outputs.append(
            JobOutput(
                path=fields[0],
                rule=fields[2],
                inputs=None if inputs == "-" else tuple(sorted(filter(None, inputs.split(",")))),
                command=None if command == "-" else command,
            )
        )
    return outputs


def pipeline_outputs(root: Path, config: dict) -> list[JobOutput]:
    """Every output of the Snakefile in ``root`` under ``config``, listed by snakemake.

    Runs ``snakemake --detailed-summary`` (which only warns where a running build holds the
    lock, so the Snakefile's own ``manifest`` rule can call it).

    Raises
    ------
    ManifestError
        If snakemake fails.
    """
    with tempfile.TemporaryDirectory() as folder:
        config_file = Path(folder) / "config.json"  # JSON is YAML: snakemake reads either
        config_file.write_text(canonical_json(config), encoding="utf-8")
        command = [sys.executable, "-m", "snakemake", "--detailed-summary", "--cores", "1"]
        result = subprocess.run(
            [*command, "--configfile", str(config_file)],
            cwd=root,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ManifestError(f"snakemake --detailed-summary failed in {root}:\n{tail}")
    return parse_detailed_summary(result.stdout)


def locked_packages(lock_file: Path) -> dict[str, str]:
    """Every package pinned in ``uv.lock``, name to version (the project itself included)."""
    with lock_file.open("rb") as handle:
        packages = tomllib.load(handle).get("package", [])
    return {p["name"]: p["version"] for p in packages if "version" in p}


def git_state(root: Path) -> dict:
    """The commit checked out in ``root`` and whether the work tree differs from it.

    Both are None outside a git repository (e.g. in the temporary tree of ``cd49d verify``).
    """

    def git(*args: str) -> str:
        command = ["git", "-C", str(root), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain").strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def plan_record(root: Path, path: str) -> dict:
    """A power plan's path, SHA-256 and root seed."""
    with (root / path).open("rb") as handle:
        root_seed = tomllib.load(handle).get("root_seed")
    return {"path": path, "sha256": sha256_of(root / path), "root_seed": root_seed}


def plan_paths(root: Path, job: JobOutput) -> list[str]:
    """The power plans a job read: its recorded inputs under ``simulations/plans/`` or, where
    snakemake has no record of the job, the plan that names a ``power/PLAN/`` folder of its
    output."""
    if job.inputs is not None:
        return [p for p in job.inputs if p.startswith(PLANS_FOLDER) and p.endswith(".toml")]
    parts = Path(job.path).parts
    named = [parts[i + 1] for i in range(len(parts) - 2) if parts[i] == "power"]
    paths = [f"{PLANS_FOLDER}{name}.toml" for name in named]
    return [path for path in paths if (root / path).is_file()]


class FileHashes:
    """SHA-256 of files under a root, each file read once (inputs are shared by many jobs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.known: dict[str, str | None] = {}

    def __call__(self, path: str) -> str | None:
        """The file's SHA-256, or None where it does not exist (or is not a file)."""
        if path not in self.known:
            file = self.root / path
            self.known[path] = sha256_of(file) if file.is_file() else None
        return self.known[path]


def output_record(job: JobOutput, hashes: FileHashes) -> dict:
    """What the manifest says about one output: hash, size, rule, command, inputs, plans."""
    record = {
        "sha256": hashes(job.path),
        "size": (hashes.root / job.path).stat().st_size,
        "rule": job.rule,
        "command": job.command,
        "inputs": None if job.inputs is None else {p: hashes(p) for p in job.inputs},
    }
    plans = plan_paths(hashes.root, job)
    if plans:
        record["plans"] = [plan_record(hashes.root, p) for p in plans]
    return record


def canonical_json(value) -> str:
    """JSON with sorted keys, two-space indents and a final newline: stable bytes."""
    return json.dumps(value, sort_keys=True, indent=2, allow_nan=False) + "\n"


def build_manifest(root: Path, jobs: list[JobOutput], *, config: dict, cores: int | None) -> dict:
    """The manifest of the build in ``root``: its outputs ``jobs`` and what made them.

    Raises
    ------
    ManifestError
        If an output is missing (the build is incomplete).
    """
    missing = [job.path for job in jobs if not (root / job.path).is_file()]
    if missing:
        raise ManifestError(
            f"{len(missing)} output(s) of the pipeline are missing, so the build is incomplete: "
            + ", ".join(missing)
        )
    hashes = FileHashes(root)
    return {
        "format": MANIFEST_FORMAT,
        "git": git_state(root),
        "pipeline": {
            "config": config,
            "config_sha256": hashlib.sha256(canonical_json(config).encode()).hexdigest(),
            "scale": config.get("scale"),
            "results": config.get("results"),
            "cores": cores,
            "files": {name: hashes(name) for name in PIPELINE_FILES},
        },
        "python": platform.python_version(),
        "packages": locked_packages(root / "uv.lock"),
        "outputs": {job.path: output_record(job, hashes) for job in jobs},
    }


def write_manifest(manifest: dict, output: Path) -> None:
    """Write ``manifest`` as canonical JSON, atomically."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(canonical_json(manifest), encoding="utf-8")
    temporary.replace(output)


def load_manifest(path: Path) -> dict:
    """A manifest written by ``write_manifest``."""
    return json.loads(path.read_text(encoding="utf-8"))


def changed_outputs(manifest: dict, root: Path) -> list[str]:
    """The outputs under ``root`` whose bytes differ from the manifest (or that are missing)."""
    hashes = FileHashes(root)
    return [
        path
        for path, record in sorted(manifest["outputs"].items())
        if hashes(path) != record["sha256"]
    ]


def default_config(root: Path) -> dict:
    """``pipeline.yaml`` with the Snakefile's defaults for ``scale`` and ``results``."""
    config = yaml.safe_load((root / "pipeline.yaml").read_text(encoding="utf-8"))
    return {"scale": "reduced", "results": "results", **config}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--config-json",
    default=None,
    help="The pipeline's configuration as JSON (default: pipeline.yaml at the reduced scale).",
)
@click.option("--cores", type=click.IntRange(1), default=None, help="Cores the build ran on.")
def main(output: Path, config_json: str | None, cores: int | None) -> None:
    """Write the manifest of the pipeline build in the current folder to OUTPUT."""
    root = Path.cwd()
    config = json.loads(config_json) if config_json else default_config(root)
    try:
        jobs = [
            job
            for job in pipeline_outputs(root, config)
            if job.rule != MANIFEST_RULE and (root / job.path).resolve() != output.resolve()
        ]
        manifest = build_manifest(root, jobs, config=config, cores=cores)
    except ManifestError as err:
        raise click.ClickException(str(err)) from err
    write_manifest(manifest, output)
    click.echo(f"{output}: {len(manifest['outputs'])} outputs with their SHA-256")


if __name__ == "__main__":
    main()
