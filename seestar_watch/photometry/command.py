"""The photometry stage as a command: its options, its outputs, and `prepare`.

One result object goes everywhere: the line a person reads, a `--csv` row, `--json` on
stdout, and `$SEESTAR_WATCH_RESULT` for the daemon. A frame that cannot be used at all is
exit 65 (EX_DATAERR: the daemon rejects it and does not retry); anything the user can fix
(no target, an unusable comparison file) is one line and exit 1.
"""

from __future__ import annotations

import csv
import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seestar_watch.config import Config, PhotometryConfig, find_config_file, load_config
from seestar_watch.errors import ConfigError, UserError
from seestar_watch.photometry import stage
from seestar_watch.photometry.catalogue import CatalogueError, load_comparisons

VSP = "https://app.aavso.org/vsp/api/chart/"  # the AAVSO's Variable Star Plotter API
VSP_ENV = "SEESTAR_WATCH_VSP_URL"  # another address for it (a mirror; the tests)
CSV_FIELDS = ("file", "OBJECT", "DATE-OBS", *stage.RESULT_FIELDS)


@dataclass(frozen=True)
class Options:
    photometry: PhotometryConfig
    folder: Path  # relative paths of the config are from here


def options_from(config_path: Path | None) -> Options:
    """The config's photometry section; its defaults when there is no config at all."""
    try:
        config: Config = load_config(find_config_file(config_path))
    except ConfigError:
        if config_path is not None or os.environ.get("SEESTAR_WATCH_CONFIG"):
            raise
        return Options(PhotometryConfig(), Path.cwd())
    return Options(config.photometry, config.folder)


def measure_frame(
    path: Path,
    options: Options,
    target_text: str | None,
    comps_path: Path | None,
    aperture: float | None,
) -> dict[str, Any]:
    """The result object for the frame at `path` (UserError for what the user can fix)."""
    comps_path = comps_path or options.photometry.comps
    try:
        comps = None if comps_path is None else load_comparisons(comps_path)
    except CatalogueError as exc:
        raise UserError(str(exc)) from None
    try:
        target = stage.resolve_target(target_text, options.photometry, comps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if target is None:
        raise UserError(
            'no target: give --target "RA DEC" or a name from photometry.targets'
            " (or set photometry.target)"
        )
    request = stage.Request(
        target, comps, aperture or options.photometry.aperture_arcsec, options.photometry
    )
    return stage.run(path, request)


def summary_line(path: Path, result: dict[str, Any]) -> str:
    return stage.summary(path.name, result)


def append_csv(path: Path, frame: Path, result: dict[str, Any]) -> None:
    """One row per frame: the file, the header's OBJECT and DATE-OBS, the result."""
    from astropy.io import fits

    header = fits.getheader(frame)
    row = {"file": frame.name, "OBJECT": header.get("OBJECT"), "DATE-OBS": header.get("DATE-OBS")}
    row.update(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
            if out.tell() == 0:
                writer.writeheader()
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in CSV_FIELDS})
    except OSError as exc:
        raise UserError(f"cannot write the CSV {path}: {exc.strerror or exc}") from None


def write_result(path: str, result: dict[str, Any]) -> None:
    try:
        with open(path, "w") as out:
            json.dump(result, out, allow_nan=False)
    except OSError as exc:
        raise UserError(f"cannot write the result file {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Prepared:
    path: Path
    chart: str
    stars: int


def prepare(name: str, fov: float, maglimit: float, config_path: Path | None) -> Prepared:
    """Fetch the AAVSO VSP sequence for `name` and save it next to the config, checked
    first (what the stage will read); UserError in one line when that cannot be done."""
    options = options_from(config_path)
    query = urllib.parse.urlencode(
        {"star": name, "fov": f"{fov:g}", "maglimit": f"{maglimit:g}", "format": "json"}
    )
    url = f"{os.environ.get(VSP_ENV) or VSP}?{query}"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = answer.read(20_000_000)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot reach the AAVSO's VSP ({getattr(exc, 'reason', None) or exc}): `prepare`"
            " needs the network, the stage itself never does"
        ) from None
    slug = "-".join("".join(c if c.isalnum() else " " for c in name).lower().split()) or "star"
    path = options.folder / f"comps-{slug}.json"
    temporary = path.with_suffix(".json.partial")
    temporary.write_bytes(body)
    try:
        comps = load_comparisons(temporary)
    except CatalogueError as exc:
        temporary.unlink()
        raise UserError(f"the VSP's answer for {name!r} is not a sequence: {exc}") from None
    os.replace(temporary, path)
    return Prepared(path, comps.chart or "na", len(comps.stars))
