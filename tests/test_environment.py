"""Environment: conda pins agree with the lock; a suitable Python is found; README opens right."""

import re
import subprocess
import tomllib

from tests.conftest import ROOT


def test_environment_yml_pins_agree_with_lock():
    locked = {
        p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    }
    pins = re.findall(
        r"^\s*-\s*([A-Za-z0-9_.-]+)=([^=\s]+)$",
        (ROOT / "environment.yml").read_text(),
        flags=re.MULTILINE,
    )
    pins = {name: version for name, version in pins if name != "python"}
    assert len(pins) >= 10
    assert {name: locked.get(name) for name in pins} == pins


def test_every_direct_dependency_is_pinned_in_environment_yml():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {
        re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower()
        for spec in project["project"]["dependencies"] + project["dependency-groups"]["dev"]
    }
    text = (ROOT / "environment.yml").read_text()
    assert all(re.search(rf"^\s*-\s*{re.escape(n)}=", text, flags=re.MULTILINE) for n in names)


def test_find_python_finds_312_or_newer():
    found = subprocess.run(
        [str(ROOT / "scripts" / "find_python.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    version = subprocess.run(
        [found, "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == "True"


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"^make \w+", text, flags=re.MULTILINE)
    assert commands[:2] == ["make reproduce", "make test"]
