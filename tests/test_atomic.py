"""Result files are written whole or not at all, with the permissions the user's umask gives
(not tempfile's owner-only 0600), so that they can be shared in a lab folder."""

import os
import stat

import arviz as az
import numpy as np
import pandas as pd
import pytest

from analysis.fit_report import write_netcdf
from simulations.atomic import replacing, write_atomically
from simulations.store import Store
from tests.conftest import BUNDLED_COHORT


@pytest.fixture(params=[0o022, 0o007])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_gives_the_umasks_mode(tmp_path, umask):
    expected = 0o666 & ~umask
    write_atomically("a,b\n1,2\n", tmp_path / "table.csv")
    store = Store(tmp_path / "power", result_hash="x")
    store.write_record("alternative-n0008", 0, pd.DataFrame({"a": [1]}))
    write_netcdf(az.from_dict({"posterior": {"x": np.zeros((2, 5))}}), tmp_path / "fit.nc")
    paths = [tmp_path / "table.csv", store.record_path("alternative-n0008", 0), tmp_path / "fit.nc"]
    assert [oct(mode(p)) for p in paths] == [oct(expected)] * 3


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("partial", encoding="utf-8")
        raise RuntimeError("killed")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_describes_outputs_are_shareable(run_cli, tmp_path):
    previous = os.umask(0o022)
    try:
        result = run_cli("describe", BUNDLED_COHORT, "--out", tmp_path)
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.stderr
    for name in ("frequentist.csv", "provenance.json"):
        assert oct(mode(tmp_path / name)) == oct(0o644), name
