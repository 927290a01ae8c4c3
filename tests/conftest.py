"""Shared paths and a CLI runner."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from analysis.cli import main

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_COHORT = ROOT / "data" / "kimura2016_simulated.csv"
BAD_FILES = ROOT / "tests" / "data" / "bad"
GOOD_MINIMAL = ROOT / "tests" / "data" / "good_minimal.csv"


@pytest.fixture
def run_cli():
    """Invoke the cd49d command in-process; returns click's Result (stdout and stderr apart)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke
