"""Every command the README shows exists and answers ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CD49D = sorted(set(re.findall(r"`cd49d ([a-z][a-z-]*)", README)))
MODULES = sorted(set(re.findall(r"python -m (analysis\.[a-z_]+)", README)))
SCRIPTS = sorted(set(re.findall(r"(benchmarks/[a-z_]+\.py)", README)))


def test_the_readme_shows_the_commands():
    assert {"fit", "power", "sbc", "validate"} <= set(CD49D)
    assert MODULES and SCRIPTS


@pytest.mark.parametrize(
    "command",
    [
        *([sys.executable, "-m", "analysis", name] for name in CD49D),
        *([sys.executable, "-m", module] for module in MODULES),
        *([sys.executable, str(ROOT / script)] for script in SCRIPTS),
    ],
    ids=[*CD49D, *MODULES, *SCRIPTS],
)
def test_every_command_the_readme_shows_answers_help(command):
    result = subprocess.run(
        [*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower(), result.stdout[:500]
