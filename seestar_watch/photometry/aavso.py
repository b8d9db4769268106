"""The night's magnitudes as the AAVSO takes them: its Extended File Format.

Written to the format's published description (AAVSO Extended File Format, version 1.2):
six parameter lines (`#TYPE=EXTENDED`, `#OBSCODE=`, `#SOFTWARE=`, `#DELIM=`, `#DATE=`,
`#OBSTYPE=`), then one observation a line in fifteen fields, `na` where a value is missing,
each within the format's length. Only frames that ran to the end with a magnitude are
observations. Names come from comparison files and results, so every text field is made
plain ASCII without the delimiter (a name with a comma would shift every later field) and
never starts a line with `#` (which makes it a comment).
"""

from __future__ import annotations

import io
import math
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from seestar_watch import __version__
from seestar_watch.errors import UserError

DELIM = ","
DateKind = Literal["HJD", "JD"]
FIELDS = (
    "STARID", "DATE", "MAGNITUDE", "MAGERR", "FILTER", "TRANS", "MTYPE", "CNAME", "CMAG",
    "KNAME", "KMAG", "AMASS", "GROUP", "CHART", "NOTES",
)  # fmt: skip
# the format's limits, in characters (fields not named have a few fixed values)
LIMITS = {
    "STARID": 30, "DATE": 16, "MAGNITUDE": 8, "MAGERR": 6, "FILTER": 5, "CNAME": 20, "CMAG": 8,
    "KNAME": 20, "KMAG": 8, "AMASS": 7, "GROUP": 5, "CHART": 20, "NOTES": 100,
}  # fmt: skip
NA = "na"
REASON = 80  # characters of the stage's reason kept when a frame is left out
_FILTER = re.compile(r"[A-Za-z]{1,5}")
_POSITION_NAME = re.compile(r"J\d{6}\.\d[+-]\d{6}")  # a target given as "RA DEC"


@dataclass
class Report:
    """What was written: observations, and the frames left out and why."""

    written: int = 0
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> frames
    not_vsp: int = 0  # observations whose comparison stars are no VSP sequence (no chart)
    unnamed: int = 0  # observations whose STARID is a position, not an AAVSO name

    def leave_out(self, reason: str) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1


def header(obscode: str, date: DateKind) -> list[str]:
    return [
        "#TYPE=EXTENDED",
        f"#OBSCODE={obscode}",
        f"#SOFTWARE=seestar-watch {__version__}",
        f"#DELIM={DELIM}",
        f"#DATE={date}",
        "#OBSTYPE=CCD",
        "#" + DELIM.join(FIELDS),  # a comment: names the columns for a person reading it
    ]


def observation(result: dict[str, Any], date: DateKind) -> list[str] | str:
    """The fifteen fields of one frame's result, or why it is no observation."""
    if "mag" not in result:
        return "not measured by the photometry stage"
    magnitude = _number(result.get("mag"), 3, LIMITS["MAGNITUDE"])
    if magnitude == NA:
        why = result.get("reason")
        return f"no magnitude: {why[:REASON]}" if isinstance(why, str) and why else "no magnitude"
    when = _number(result.get(date.lower()), 6, LIMITS["DATE"])
    if when == NA:
        return f"no {date}"
    starid = _text(result.get("target"), LIMITS["STARID"])
    if starid == NA:
        return "no target name"
    band = str(result.get("filter") or "TG")
    return [
        starid,
        when,
        magnitude,
        _number(result.get("mag_err"), 3, LIMITS["MAGERR"]),
        band.upper() if _FILTER.fullmatch(band) else "TG",
        "NO",  # green-channel magnitudes against V comparison stars, not transformed
        "STD",  # an ensemble's zero point: a standardised magnitude
        "ENSEMBLE",
        NA,  # an ensemble has no one comparison star's magnitude
        _text(result.get("check_name"), LIMITS["KNAME"]),
        _number(result.get("check_inst_mag"), 3, LIMITS["KMAG"]),  # instrumental, as asked
        _number(result.get("airmass"), 4, LIMITS["AMASS"]),
        NA,
        _text(result.get("chart"), LIMITS["CHART"]),
        _notes(result),
    ]


def _notes(result: dict[str, Any]) -> str:
    """What a reviewer checks a night by, in the `KEY=value|...` style other tools use."""
    parts = [
        ("ENSEMBLE", result.get("comps"), 0),
        ("ZPSCATTER", result.get("zp_scatter"), 3),
        ("VMAGINS", result.get("inst_mag"), 3),
        ("KMAGSTD", result.get("check_mag"), 3),
        ("KREFMAG", result.get("check_ref_mag"), 3),
    ]
    notes = [f"{key}={_number(value, digits, 12)}" for key, value, digits in parts]
    if not result.get("chart"):  # no VSP sequence: say where the comparison stars came from
        notes.append(f"COMPS={result.get('comp_source')}")
    return _text("|".join(notes), LIMITS["NOTES"])


def _number(value: Any, digits: int, limit: int) -> str:
    """A finite number with a decimal point, within `limit` characters; else `na`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return NA
    shown = f"{value:.{digits}f}"
    return shown if len(shown) <= limit else NA


def _text(value: Any, limit: int) -> str:
    """Plain printable ASCII, no delimiter, not starting with `#`, within `limit`."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return NA
    folded = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    plain = "".join(c if 32 <= ord(c) <= 126 and c != DELIM else " " for c in folded)
    plain = " ".join(plain.split()).lstrip("# ")[:limit].strip()
    return plain or NA


def write(results: Iterable[dict[str, Any]], out: IO[str], obscode: str, date: DateKind) -> Report:
    """The report of `results` (the frames' result objects), in time order."""
    report = Report()
    rows: list[list[str]] = []
    for result in results:
        row = observation(result, date)
        if isinstance(row, str):
            report.leave_out(row)
            continue
        rows.append(row)
        report.not_vsp += not result.get("chart")  # a VSP sequence has its chart id
        report.unnamed += bool(_POSITION_NAME.fullmatch(row[0]))
    rows.sort(key=lambda row: float(row[1]))
    out.write("\n".join(header(obscode, date)) + "\n")
    for row in rows:
        out.write(DELIM.join(row) + "\n")
    report.written = len(rows)
    return report


def export(
    results: Iterable[dict[str, Any]], obscode: str, date: DateKind, output: Path | None
) -> Report:
    """The report to `output` (the standard output: None), written whole or not at all."""
    text = io.StringIO()
    report = write(results, text, obscode, date)
    if report.written == 0:
        raise UserError("no frame with a magnitude to report (is the pipeline `photometry`?)")
    if output is None:
        sys.stdout.write(text.getvalue())
        return report
    try:
        output.write_text(text.getvalue(), encoding="ascii")
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    return report
