"""Reading ``fit.nc`` files (written by ``cd49d fit``) for figures, tables and tests."""

from __future__ import annotations

from pathlib import Path

import xarray as xr


def read_fit(path: Path | str) -> xr.DataTree:
    """The fit's data tree, read into memory, with the file closed.

    Opening a netCDF file again while an earlier lazy handle to it is still open can crash
    the HDF5 library (a segmentation fault, seen in the tests); reading eagerly and closing
    avoids that.
    """
    with xr.open_datatree(path) as tree:
        return tree.load()
