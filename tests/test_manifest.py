"""The build manifest (analysis/manifest.py) and ``cd49d verify`` (analysis/verify.py).

Small trees made here, never a full pipeline run: a three-rule Snakefile with the real
``manifest`` rule for the manifest itself, and hand-made builds for the comparisons. Every
number in them is made up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from analysis.manifest import (
    JobOutput,
    build_manifest,
    changed_outputs,
    load_manifest,
    parse_detailed_summary,
    write_manifest,
)
from analysis.verify import source_files
from tests.conftest import ROOT

#: A pipeline of three rules; the Snakefile's own manifest rule is appended to it.
TINY_SNAKEFILE = """\
configfile: "pipeline.yaml"

SCALE = config.get("scale", "reduced")
RESULTS = config.get("results", "results")
CORES = workflow.cores


rule all:
    input:
        "paper/generated/numbers.json",
        "paper/manifest.json",


rule power:
    input:
        plan="simulations/plans/tiny.toml",
        code="model.py",
    output:
        f"{RESULTS}/power/tiny/power.csv",
        f"{RESULTS}/power/tiny/sample_size.csv",
    shell:
        "printf 'n,power\\\\n10,0.5\\\\n' > {output[0]} && "
        "printf 'n_required\\\\n12\\\\n' > {output[1]}"


rule numbers:
    input:
        f"{RESULTS}/power/tiny/sample_size.csv",
    output:
        "paper/generated/numbers.json",
    shell:
        "cp {input} {output}"


"""
ESTIMANDS = (
    "estimand,group,subset,mean,sd,q2.5,q97.5,prob_positive,rhat,ess_bulk,ess_tail\n"
    "pct_pos,HC,Th1,78.8,2.4,73.7,83.0,1.0,1.001,3153.0,3298.0\n"
    "kappa,,,0.71,0.1,0.5,0.9,1.0,1.002,2000.0,2100.0\n"
)
FREQUENTIST = (
    "analysis,subset,statistic,p_value\nmann_whitney,Th1/Treg,40.0,0.2\n"
    "mann_whitney,Th17/Treg,52.0,0.03\n"
)
#: A build's files: path -> content.
BUILD = {
    "data/cohort.csv": "subject_id,group\nS1,HC\n",
    "results/frequentist/frequentist.csv": FREQUENTIST,
    "results/fits/m/estimands.csv": ESTIMANDS,
    "results/fits/m/fit.nc": "netCDF, created at 12:00",
    "paper/generated/numbers.json": '{"kappa": 0.71}\n',
    "paper/figures/fig.pdf": "%PDF figure, created at 12:00",
}
CODE = {"analysis/numbers.py": "# the numbers script\n"}
JOBS = [
    JobOutput("results/frequentist/frequentist.csv", "describe", ("data/cohort.csv",), "describe"),
    JobOutput("results/fits/m/estimands.csv", "fit", ("data/cohort.csv",), "fit m"),
    JobOutput("results/fits/m/fit.nc", "fit", ("data/cohort.csv",), "fit m"),
    JobOutput(
        "paper/generated/numbers.json",
        "numbers",
        ("analysis/numbers.py", "results/fits/m/estimands.csv"),
        "numbers",
    ),
    JobOutput("paper/figures/fig.pdf", "figure", ("results/fits/m/estimands.csv",), "figure"),
]


def manifest_rule() -> str:
    """The Snakefile's manifest rule, from its comment to its shell command."""
    text = (ROOT / "Snakefile").read_text(encoding="utf-8")
    found = re.search(
        r"# The manifest \(analysis/manifest\.py.*?python -m analysis\.manifest.*?\n", text, re.S
    )
    assert found, "the Snakefile has no manifest rule"
    return found.group(0)


def tiny_pipeline(tmp_path: Path) -> Path:
    tree = tmp_path / "tiny"
    (tree / "simulations" / "plans").mkdir(parents=True)
    (tree / "Snakefile").write_text(TINY_SNAKEFILE + manifest_rule(), encoding="utf-8")
    (tree / "pipeline.yaml").write_text("scales: {reduced: {}}\n", encoding="utf-8")
    (tree / "simulations" / "plans" / "tiny.toml").write_text("root_seed = 20161027\n")
    (tree / "model.py").write_text("# the model\n")
    (tree / "analysis").mkdir()
    shutil.copy2(ROOT / "analysis" / "manifest.py", tree / "analysis" / "manifest.py")
    shutil.copy2(ROOT / "uv.lock", tree / "uv.lock")
    return tree


def run_snakemake(tree: Path) -> None:
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"]
    subprocess.run(command, cwd=tree, env=environment, check=True, capture_output=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory) -> Path:
    """The tiny pipeline, built by snakemake with the manifest rule."""
    tree = tiny_pipeline(tmp_path_factory.mktemp("manifest"))
    run_snakemake(tree)
    return tree


def test_the_manifest_rule_records_every_output_with_its_hash_rule_inputs_and_plan(tiny_build):
    manifest = load_manifest(tiny_build / "paper" / "manifest.json")
    outputs = manifest["outputs"]
    assert sorted(outputs) == [
        "paper/generated/numbers.json",
        "results/power/tiny/power.csv",
        "results/power/tiny/sample_size.csv",
    ]
    for path, record in outputs.items():
        assert record["sha256"] == sha256(tiny_build / path)
        assert record["size"] == (tiny_build / path).stat().st_size
    power = outputs["results/power/tiny/power.csv"]
    assert power["rule"] == "power"
    assert power["inputs"] == {
        "model.py": sha256(tiny_build / "model.py"),
        "simulations/plans/tiny.toml": sha256(tiny_build / "simulations/plans/tiny.toml"),
    }
    assert power["plans"] == [
        {
            "path": "simulations/plans/tiny.toml",
            "sha256": sha256(tiny_build / "simulations/plans/tiny.toml"),
            "root_seed": 20161027,
        }
    ]
    numbers = outputs["paper/generated/numbers.json"]
    assert numbers["rule"] == "numbers" and numbers["command"] == (
        "cp results/power/tiny/sample_size.csv paper/generated/numbers.json"
    )
    assert manifest["pipeline"]["scale"] == "reduced" and manifest["pipeline"]["cores"] == 1
    assert manifest["pipeline"]["files"]["uv.lock"] == sha256(ROOT / "uv.lock")
    with (ROOT / "uv.lock").open("rb") as handle:
        locked = {p["name"]: p["version"] for p in tomllib.load(handle)["package"]}
    assert {name: manifest["packages"][name] for name in ("pymc", "snakemake", "typst")} == {
        name: locked[name] for name in ("pymc", "snakemake", "typst")
    }
    assert manifest["git"] == {"commit": None, "dirty": None}  # not a git repository


def test_the_manifest_is_stable_json_with_sorted_keys(tiny_build):
    written = (tiny_build / "paper" / "manifest.json").read_text(encoding="utf-8")
    manifest = json.loads(written)
    assert written == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    config = json.dumps(manifest["pipeline"]["config"])
    again = tiny_build / "again.json"
    command = [sys.executable, "-m", "analysis.manifest", str(again), "--config-json", config]
    subprocess.run([*command, "--cores", "1"], cwd=tiny_build, check=True, capture_output=True)
    assert again.read_text(encoding="utf-8") == written


def test_the_manifest_detects_a_changed_byte(tiny_build, tmp_path):
    tree = tmp_path / "copy"
    shutil.copytree(tiny_build, tree)
    manifest = load_manifest(tree / "paper" / "manifest.json")
    assert changed_outputs(manifest, tree) == []
    table = tree / "results" / "power" / "tiny" / "power.csv"
    content = bytearray(table.read_bytes())
    content[-2] ^= 1  # '5' becomes '4'
    table.write_bytes(bytes(content))
    assert changed_outputs(manifest, tree) == ["results/power/tiny/power.csv"]


def test_the_detailed_summary_is_parsed_into_outputs_rules_inputs_and_commands():
    text = (
        "Building DAG of jobs...\n"
        "output_file\tdate\trule\tlog-file(s)\tinput-file(s)\tshellcmd\tstatus\tplan\n"
        "r/a.csv\tSat Dec  5 12:14:48 2026\ta\t\tz.py,in.txt\tcat in.txt > r/a.csv\tok\tno update\n"
        "r/b.csv\t-\tb\t-\t-\t-\tmissing\tupdate pending\n"
    )
    assert parse_detailed_summary(text) == [
        JobOutput("r/a.csv", "a", ("in.txt", "z.py"), "cat in.txt > r/a.csv"),
        JobOutput("r/b.csv", "b", None, None),
    ]


def test_verify_rebuilds_the_pipeline_in_a_temporary_folder_and_finds_it_the_same(
    tiny_build, tmp_path, run_cli
):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_build, tree)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)  # the sources are what git lists
    result = run_cli("verify", "--manifest", tree / "paper" / "manifest.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "paper/generated/numbers.json: same",
        "results/power/tiny/power.csv: same",
        "results/power/tiny/sample_size.csv: same",
        "verify: 3 outputs: 3 same",
        "verify: passed",
    ]
    assert result.stderr.startswith("Rebuilding in ")


# --- cd49d verify --rebuilt -------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content, encoding="utf-8")


@pytest.fixture
def builds(tmp_path) -> tuple[Path, Path]:
    """A build with its manifest, and an identical rebuild beside it (without the manifest)."""
    original, rebuilt = tmp_path / "build", tmp_path / "rebuilt"
    for root in (original, rebuilt):
        write_tree(root, BUILD | CODE)
        shutil.copy2(ROOT / "uv.lock", root / "uv.lock")
    config = {"scale": "reduced", "results": "results"}
    manifest = build_manifest(original, JOBS, config=config, cores=1)
    write_manifest(manifest, original / "paper" / "manifest.json")
    return original, rebuilt


def verify(run_cli, original: Path, rebuilt: Path):
    return run_cli(
        "verify", "--manifest", original / "paper" / "manifest.json", "--rebuilt", rebuilt
    )


def test_verify_passes_on_an_identical_rebuild(run_cli, builds):
    result = verify(run_cli, *builds)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "paper/figures/fig.pdf: same",
        "paper/generated/numbers.json: same",
        "results/fits/m/estimands.csv: same",
        "results/fits/m/fit.nc: same",
        "results/frequentist/frequentist.csv: same",
        "verify: 5 outputs: 5 same",
        "verify: passed",
    ]


def test_verify_passes_when_an_mcmc_table_differs_within_tolerance(run_cli, builds):
    _, rebuilt = builds
    # 0.1 is 0.41 of the tolerance: 4 x sqrt(2) x 2.4 / sqrt(3153) = 0.242
    write_tree(
        rebuilt,
        {
            "results/fits/m/estimands.csv": ESTIMANDS.replace(",78.8,", ",78.9,"),
            "results/fits/m/fit.nc": "netCDF, created at 13:00",
            "paper/generated/numbers.json": '{"kappa": 0.72}\n',
            "paper/figures/fig.pdf": "%PDF figure, created at 13:00",
        },
    )
    result = verify(run_cli, *builds)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "paper/figures/fig.pdf: compared through: results/fits/m/estimands.csv "
        "(PDF: stamped with its creation date)",
        "paper/generated/numbers.json: within tolerance: built from outputs within tolerance: "
        "results/fits/m/estimands.csv",
        "results/fits/m/estimands.csv: within tolerance: largest difference in column 'mean', "
        "0.41 of its tolerance",
        "results/fits/m/fit.nc: compared through: results/fits/m/estimands.csv "
        "(netCDF: ArviZ stamps creation and sampling times)",
        "results/frequentist/frequentist.csv: same",
        "verify: 5 outputs: 1 same, 2 within tolerance, 2 compared through",
        "verify: passed",
    ]


def test_verify_fails_on_a_tampered_output_naming_the_file_and_column(run_cli, builds):
    _, rebuilt = builds
    write_tree(
        rebuilt,
        {
            "results/fits/m/estimands.csv": ESTIMANDS.replace(",78.8,", ",80.0,"),
            "paper/generated/numbers.json": '{"kappa": 0.8}\n',
            "paper/figures/fig.pdf": "%PDF figure, created at 13:00",
        },
    )
    result = verify(run_cli, *builds)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[2] == (
        "results/fits/m/estimands.csv: DIFFERS: column 'mean' (1 of 2 rows beyond tolerance), "
        "row 1 (estimand=pct_pos, group=HC, subset=Th1): 78.8 in the manifest's build, 80 "
        "rebuilt, |difference| 1.2 > tolerance 0.242 (4 x the combined MCSE of a posterior "
        "mean, sd/sqrt(ess_bulk))"
    )
    # what was made from it differs with it; what was not is still the same
    assert lines[0] == (
        "paper/figures/fig.pdf: DIFFERS: made with or from outputs that differ: "
        "results/fits/m/estimands.csv"
    )
    assert lines[-2:] == ["verify: 5 outputs: 2 same, 3 DIFFERS", "verify: FAILED"]


def test_verify_requires_deterministic_outputs_to_be_identical(run_cli, builds):
    _, rebuilt = builds
    write_tree(
        rebuilt, {"results/frequentist/frequentist.csv": FREQUENTIST.replace("0.03", "0.031")}
    )
    result = verify(run_cli, *builds)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[4] == (
        "results/frequentist/frequentist.csv: DIFFERS: deterministic (the study's tests: exact "
        "or asymptotic, no random numbers): column 'p_value' (1 of 2 rows beyond tolerance), "
        "row 2 (analysis=mann_whitney, subset=Th17/Treg): 0.03 in the manifest's build, 0.031 "
        "rebuilt, |difference| 0.001 > tolerance 0 (none: must be equal)"
    )


def test_verify_reports_a_missing_output_and_a_changed_source(run_cli, builds):
    _, rebuilt = builds
    (rebuilt / "results" / "fits" / "m" / "fit.nc").unlink()
    write_tree(rebuilt, {"analysis/numbers.py": "# another numbers script\n"})
    result = verify(run_cli, *builds)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "analysis/numbers.py: source changed since the manifest"
    assert "results/fits/m/fit.nc: missing" in lines
    assert lines[-3:] == [
        "verify: 1 source file(s) differ from the manifest's record",
        "verify: 5 outputs: 4 same, 1 missing",
        "verify: FAILED",
    ]


def test_verify_without_a_manifest_is_bad_input(run_cli, tmp_path):
    result = run_cli("verify", "--manifest", tmp_path / "none.json", "--rebuilt", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{tmp_path / 'none.json'}: no readable manifest")


def test_the_rebuild_copies_the_sources_git_lists_and_no_build_product(tmp_path):
    write_tree(tmp_path, BUILD | CODE | {".gitignore": "results/\n", "notes.tmp": "x\n"})
    write_tree(tmp_path, {"paper/manifest.json": "{}\n", "paper/manuscript.typ": "= Title\n"})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    manifest = {"outputs": {job.path: {} for job in JOBS}}
    assert sorted(source_files(tmp_path, manifest)) == [
        ".gitignore",
        "analysis/numbers.py",
        "data/cohort.csv",
        "notes.tmp",
        "paper/manuscript.typ",
    ]
