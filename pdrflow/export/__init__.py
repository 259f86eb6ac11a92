"""``pdrflow export``: a finished grid as one xarray Dataset, a flat table and a PDR Toolbox (pdrtpy) model set.

Everything is read from the ledger and the archive alone (``pdrflow.results``), several models at once,
each file checked against the ledger's sha256. Modules: ``lines`` (pdrtpy line ids, unit conversions),
``cube`` (the grid's values on its axes, the ledger's provenance), ``coverage`` (holes, failures,
outliers), ``fits`` (the model set), ``writer`` (the files and :func:`export_grid`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportResult", "HolesRefused", "export_grid", "pdrtpy_modelset"]


def __getattr__(name: str) -> Any:
    # Lazy: pdrflow.results imports pdrflow.export.lines, and xarray/astropy cost seconds to import.
    if name in ("ExportResult", "HolesRefused", "export_grid"):
        from . import writer

        return getattr(writer, name)
    if name == "pdrtpy_modelset":
        from .fits import pdrtpy_modelset

        return pdrtpy_modelset
    raise AttributeError(name)
