"""``pdrflow report`` and ``pdrflow export``: what the archive holds, as pages and as data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from ..config import Config
from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK


def cmd_report(config: Config, args: argparse.Namespace, console: Console) -> int:
    from ..report import write_report  # matplotlib and h5py: only this command pays for them
    from ..results import ResultsError
    from ..storage import StorageError

    try:
        result = write_report(config, args.out)
    except (ResultsError, StorageError) as exc:
        print(f"pdrflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"wrote {len(result.files)} files to {args.out}; open {result.html}", markup=False)
    return EXIT_OK


def cmd_export(config: Config, args: argparse.Namespace, console: Console) -> int:
    from ..export import HolesRefused, export_grid  # xarray and astropy: only this command pays for them
    from ..results import ResultsError
    from ..storage import StorageError

    ratios = [r for item in args.ratios for r in item.split(",") if r] if args.ratios is not None else None
    try:
        result = export_grid(config, args.out, ratios=ratios, allow_holes=args.allow_holes)
    except HolesRefused as refused:
        for path in refused.result.files:
            console.print(f"wrote {path}", markup=False)
        print(f"pdrflow: error: {refused}", file=sys.stderr)
        return EXIT_FAILED
    except (ResultsError, StorageError, ValueError) as exc:
        print(f"pdrflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    cover = result.coverage
    console.print(f"{cover.archived} of {cover.cells} cells archived and read; {len(cover.failed)} failed, "
                  f"{len(cover.missing)} missing, {len(cover.outliers)} outliers flagged (coverage.json)", markup=False)
    if result.holes:
        console.print(f"model set written with holes (NaN) in {len(result.holes)} planes", markup=False)
    if result.standin:
        console.print("the data were made by the stand-in, not KOSMA-tau", markup=False)
    modelset = f", pdrtpy model set {result.modelset.table}" if result.modelset else ""
    console.print(f"wrote {result.dataset}, {result.csv}{modelset}", markup=False)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "PNG maps and one self-contained HTML page, from the ledger and the archive"
    report = commands.add_parser("report", help=text, description=text + ". Exit 0 written (failed jobs are drawn "
                                 "on the page), 2 bad input or nothing archived to read (a grid never run).")
    report.add_argument("config", help="the run's YAML config file")
    report.add_argument("--out", type=Path, required=True, help="directory for the PNGs, report.html and values.json")
    report.set_defaults(handler=cmd_report)
    export = commands.add_parser(
        "export", help="the grid as one xarray file, a flat table and a pdrtpy model set, from the ledger and archive",
        description="Write grid.nc (xarray, h5netcdf), grid.csv/grid.parquet, coverage.json and pdrtpy/ (FITS model "
        "images per line and line ratio, per metallicity and mass). Exit 0 written, 1 the model set refused for "
        "holes (the rest written), 2 bad input.")
    export.add_argument("config", help="the run's YAML config file")
    export.add_argument("--out", type=Path, required=True, help="directory for the export")
    export.add_argument("--ratios", nargs="+", metavar="NUM/DEN", default=None,
                        help="line ratios as pdrtpy ids, e.g. OI_63/CII_158 CII_158/CI_609 (default: results.line_ratios)")
    export.add_argument("--allow-holes", action="store_true",
                        help="write the model set even where cells have no value (NaN there)")
    export.set_defaults(handler=cmd_export)
