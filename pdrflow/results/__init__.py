"""Read archived model outputs back: profiles, abundances and line tables, from the archive alone.

The ledger says which jobs exist, their axes and state, and which files were archived with which
sha256; the files themselves are fetched from the archive (local directory or SFTP) through the
storage backend, never from a scratch directory, and checked against the ledger's sha256.

What is read, per model J of grid G (the contract's layout, pdrflow/kosma/layout.py):

- ``G/pdrgrid/pdrstruct<J>.hdf5``: ``/depth_cm``, ``/av``, ``/tgas`` (required), ``/tdust``, ``/nh``
  and ``/abundances/<species>`` (relative to H nuclei).
- ``G/oniongrid/ONION<J>.linebt_<S>.out``: one row per transition after ``#`` header lines whose
  last one names the columns ``transition wavelength_um intensity_erg_s_cm2_sr peak_tb_K``.
- ``G/pdrgrid/pdrchem<J>.hdf5`` when archived (an optional output): ``/species`` and
  ``/column_density`` (surface to centre, cm^-2).

Those names are the defaults of the config's ``results`` section (``structure``, ``linebt``,
``chemistry``), which maps them to what another code writes. A required dataset or column the file
lacks is an error that lists what the file does hold; missing optional ones, species or tables are
notes on the :class:`ModelOutputs`. :func:`model_scalars` gives every scalar of a model (surface
temperatures, transition depths, column densities, each line's intensity, peak T_B and K km/s).

Usage (a notebook)::

    with open_archive(load_config("grid.yaml")) as archive:
        for job in archive.jobs():
            if job.archived:
                out = archive.model_outputs(job)
                print(job.name, out.surface_tgas, out.line_intensity("C+", 157.74))

Modules: ``outputs`` (what a model's outputs are), ``formats`` (reading the files), ``scalars`` (the numbers
derived from them), ``reader`` (the ledger's jobs and the archive's files: :func:`open_archive`).
"""

from __future__ import annotations

from ..ledger.queries import JobRecord
from .formats import LINEBT_COLUMNS, file_contents, parse_linebt, read_chemistry, read_structure
from .outputs import (
    CARBON_CARRIERS,
    ArchivedFileRecord,
    LineTable,
    ModelNotArchived,
    ModelOutputs,
    ResultsError,
)
from .reader import ArchiveReader, chemistry_path, linebt_path, open_archive, structure_path
from .scalars import (
    ScalarInfo,
    c_co_transition_av,
    cplus_c_transition_av,
    crossing_av,
    h_h2_transition_av,
    model_scalars,
)

__all__ = [
    "CARBON_CARRIERS", "LINEBT_COLUMNS", "ArchiveReader", "ArchivedFileRecord", "JobRecord", "LineTable",
    "ModelNotArchived", "ModelOutputs", "ResultsError", "ScalarInfo", "c_co_transition_av", "chemistry_path",
    "cplus_c_transition_av", "crossing_av", "file_contents", "h_h2_transition_av", "linebt_path", "model_scalars",
    "open_archive", "parse_linebt", "read_chemistry", "read_structure", "structure_path",
]
