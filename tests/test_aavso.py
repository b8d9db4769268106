"""`export --aavso`: the AAVSO Extended File Format, checked against its published description
(version 1.2) field by field, and from frames the real stage measured under `process`."""

from __future__ import annotations

import io
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from seestar_watch import __version__
from seestar_watch.photometry import aavso
from seestar_watch.tools import synthetic
from tests.harness import Scope
from tests.test_photometry import CENTRE, STARS, WHEN, write_vsp

# The format's six parameters, in the order it gives them, and its fifteen fields with
# their limits (characters); fields with a fixed vocabulary have it here.
PARAMETERS = ("TYPE", "OBSCODE", "SOFTWARE", "DELIM", "DATE", "OBSTYPE")
FIELDS = (
    "STARID", "DATE", "MAGNITUDE", "MAGERR", "FILTER", "TRANS", "MTYPE", "CNAME", "CMAG",
    "KNAME", "KMAG", "AMASS", "GROUP", "CHART", "NOTES",
)  # fmt: skip
LIMITS = {"STARID": 30, "DATE": 16, "MAGNITUDE": 8, "MAGERR": 6, "CNAME": 20, "CMAG": 8,
          "KNAME": 20, "KMAG": 8, "AMASS": 7, "GROUP": 5, "CHART": 20, "NOTES": 100}  # fmt: skip

MEASURED = {
    "target": "RR Lyr", "mag": 7.6543, "mag_err": 0.0123, "filter": "TG", "comps": 9,
    "zp": 20.1, "zp_scatter": 0.031, "check_name": "000-BBC-123", "check_mag": 9.321,
    "check_err": 0.01, "check_inst_mag": -10.779, "check_ref_mag": 9.3, "airmass": 1.23456,
    "altitude": 54.1, "jd": 2460800.5, "hjd": 2460800.5012345, "bjd_tdb": 2460800.5020,
    "inst_mag": -12.45, "saturated": False, "solved": True, "solver": "astrometry.net",
    "comp_source": "comps-rr-lyr.json", "chart": "X12345ABC", "reason": None,
}  # fmt: skip


def parse(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Read a report as WebObs does: `#KEY=value` parameters (other `#` lines are comments),
    then one observation a line split on the declared delimiter."""
    parameters: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        assert line.strip(), "a blank line that is not commented out: WebObs refuses the file"
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.upper() in PARAMETERS:
                parameters[key.upper()] = value
            continue
        values = line.split(parameters["DELIM"])
        assert len(values) == len(FIELDS), line
        rows.append(dict(zip(FIELDS, values, strict=True)))
    return parameters, rows


def report(results: list[dict[str, Any]], date: aavso.DateKind = "HJD") -> tuple[Any, ...]:
    out = io.StringIO()
    written = aavso.write(results, out, "XYZ", date)
    return (*parse(out.getvalue()), written, out.getvalue())


def test_the_six_parameters_come_first_in_the_formats_order() -> None:
    parameters, _, _, text = report([MEASURED])
    assert list(parameters) == list(PARAMETERS)
    assert text.splitlines()[: len(PARAMETERS)] == [
        "#TYPE=EXTENDED", "#OBSCODE=XYZ", f"#SOFTWARE=seestar-watch {__version__}", "#DELIM=,",
        "#DATE=HJD", "#OBSTYPE=CCD",
    ]  # fmt: skip
    assert len(parameters["SOFTWARE"]) <= 255


def test_every_field_of_an_ensemble_observation() -> None:
    _, (row,), written, _ = report([MEASURED])
    assert written.written == 1
    assert row["STARID"] == "RR Lyr"
    assert row["DATE"] == "2460800.501235"  # HJD, mid-exposure, as the stage gives it
    assert row["MAGNITUDE"] == "7.654" and "." in row["MAGNITUDE"]  # "a dot is required"
    assert row["MAGERR"] == "0.012"
    assert row["FILTER"] == "TG"  # the green channel of a colour sensor
    assert row["TRANS"] == "NO"  # not transformed
    assert row["MTYPE"] == "STD"  # standardised (an ensemble), not differential
    assert row["CNAME"] == "ENSEMBLE" and row["CMAG"] == "na"  # the format's rule for one
    assert row["KNAME"] == "000-BBC-123"
    assert row["KMAG"] == "-10.779"  # the check star's instrumental magnitude, as asked
    assert row["AMASS"] == "1.2346"
    assert row["GROUP"] == "na"
    assert row["CHART"] == "X12345ABC"  # the VSP sequence id
    assert row["NOTES"] == "ENSEMBLE=9|ZPSCATTER=0.031|VMAGINS=-12.450|KMAGSTD=9.321|KREFMAG=9.300"
    for name, limit in LIMITS.items():
        assert len(row[name]) <= limit, name


def test_jd_when_chosen() -> None:
    parameters, (row,), _, _ = report([MEASURED], "JD")
    assert parameters["DATE"] == "JD" and row["DATE"] == "2460800.500000"


def test_missing_values_are_na_and_no_vsp_sequence_is_said() -> None:
    plain = {
        **MEASURED, "check_name": None, "check_inst_mag": None, "check_mag": None,
        "airmass": None, "mag_err": None, "chart": None, "comp_source": "Tycho-2 VT",
    }  # fmt: skip
    _, (row,), written, _ = report([plain])
    assert row["KNAME"] == row["KMAG"] == row["AMASS"] == row["MAGERR"] == row["CHART"] == "na"
    assert row["NOTES"].endswith("|COMPS=Tycho-2 VT")
    assert written.not_vsp == 1


def test_names_from_files_and_results_cannot_break_a_line_or_a_field() -> None:
    hostile = {
        **MEASURED,
        "target": "#V* Ré Oph, the\nlong name that goes on and on and on",
        "check_name": "a,b\tc\x1b[2J",
        "chart": "X1,2\r\n#3",
        "comp_source": "x" * 300,
    }
    _, (row,), _, text = report([hostile])
    assert text.isascii()
    assert row["STARID"] == "V* Re Oph the long name that g"  # folded to ASCII, 30 at most
    assert row["KNAME"] == "a b c [2J" and row["CHART"] == "X1 2 #3"
    for name, limit in LIMITS.items():
        assert len(row[name]) <= limit, name
    assert not any(line.startswith("#") for line in text.splitlines()[len(PARAMETERS) + 1 :])


def test_only_frames_with_a_magnitude_and_a_time_in_time_order() -> None:
    later = {**MEASURED, "hjd": 2460800.6, "target": "later"}
    results = [
        later, MEASURED,
        {**MEASURED, "mag": None, "reason": "target not in field"},
        {**MEASURED, "hjd": None},
        {"fwhm_arcsec": 9.1, "stars": 61, "inst_mag": -11.2},  # quicklook's: no magnitude
        {**MEASURED, "mag": 1e12},  # not a magnitude the format can hold
        {**MEASURED, "mag": float("nan")},
    ]  # fmt: skip
    _, rows, written, _ = report(results)
    assert [row["STARID"] for row in rows] == ["RR Lyr", "later"]
    assert written.written == 2
    assert written.left_out == {
        "no magnitude: target not in field": 1,  # the stage's own reason
        "no magnitude": 2,  # one the format cannot hold, a NaN
        "not measured by the photometry stage": 1,  # quicklook's result
        "no HJD": 1,
    }


# -- from frames the stage measured, through the ledger --------------------------------


def stage_scope(root: Path, **photometry: str) -> Scope:
    """A config whose pipeline is the photometry stage."""
    scope = Scope(root)
    command = [sys.executable, "-m", "seestar_watch", "photometry", "{path}"]
    scope.update(pipeline={"command": command, "timeout": 60}, photometry=photometry)
    return scope


@pytest.fixture(scope="module")
def measured_night(tmp_path_factory: pytest.TempPathFactory) -> Scope:
    """Three synthetic frames of one field, 10 minutes apart, measured by the real stage
    (`photometry` with a VSP-shaped sequence) under `process`, so their results are in the
    ledger as a night's would be; a fourth frame of another field has no magnitude."""
    tmp_path = tmp_path_factory.mktemp("night")
    scope = stage_scope(tmp_path, comps=str(write_vsp(tmp_path)))
    folder = scope.share / "V TEST_sub"
    folder.mkdir()
    for n in range(3):
        when = WHEN + timedelta(minutes=10 * n)
        frame = folder / f"Light_V TEST_10.0s_IRCUT_{n}.fit"
        frame.write_bytes(synthetic.field_frame(synthetic.Field(*CENTRE, STARS, seed=n), when))
    elsewhere = synthetic.Field(CENTRE[0] + 20, CENTRE[1], STARS)  # no sequence star there
    (folder / "Light_V TEST_10.0s_IRCUT_9.fit").write_bytes(synthetic.field_frame(elsewhere))
    for frame in sorted(folder.iterdir()):
        done = scope.cli("process", str(frame), timeout=120)
        assert done.returncode == 0, done.stderr
    return scope


@pytest.mark.xdist_group("aavso-night")
def test_a_night_measured_by_the_stage_is_a_report(measured_night: Scope, tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    done = measured_night.cli("export", "--aavso", "--obscode", "xyz", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 observation(s) written to" in done.stderr
    assert "1 frame(s) left out: no magnitude: no star of vsp.json in this frame" in done.stderr
    assert "warning" not in done.stderr  # a VSP sequence, with its chart id
    parameters, rows = parse(out.read_text(encoding="ascii"))
    assert parameters["OBSCODE"] == "XYZ" and parameters["DATE"] == "HJD"
    assert [row["STARID"] for row in rows] == ["V* TEST"] * 3  # the sequence's star
    dates = [float(row["DATE"]) for row in rows]
    assert dates == sorted(dates) and dates[1] - dates[0] == pytest.approx(600 / 86400, abs=1e-5)
    for row in rows:
        assert abs(float(row["MAGNITUDE"]) - STARS[0].mag) < 0.1
        assert 0 < float(row["MAGERR"]) < 0.05
        assert row["CHART"] == "X12345ABC" and row["CNAME"] == "ENSEMBLE"
        assert row["KNAME"].startswith("000-BBB-") and float(row["KMAG"]) < 0
        assert 1 <= float(row["AMASS"]) < 40
    on_stdout = measured_night.cli("export", "--aavso", "--obscode", "XYZ", "--date", "jd")
    assert on_stdout.returncode == 0 and "#DATE=JD" in on_stdout.stdout


@pytest.mark.xdist_group("aavso-night")
def test_the_observer_code_from_the_config(measured_night: Scope) -> None:
    measured_night.update(photometry={"obscode": "abc"})
    try:
        done = measured_night.cli("export", "--aavso")
    finally:
        measured_night.update(photometry={"obscode": None})
    assert done.returncode == 0 and "#OBSCODE=ABC\n" in done.stdout


@pytest.mark.xdist_group("aavso-night")
def test_a_report_that_cannot_be_right_is_one_line(measured_night: Scope, tmp_path: Path) -> None:
    def said(*args: str) -> tuple[int, str]:
        done = measured_night.cli("export", "--aavso", *args)
        assert "Traceback" not in done.stderr
        return done.returncode, done.stderr.strip().splitlines()[-1]

    assert said() == (2, "Error: --aavso needs your observer code: --obscode CODE")
    code, line = said("--obscode", "X,Y\n")
    assert code == 2 and "letters and digits" in line
    code, line = said("--obscode", "XYZ", "-o", str(tmp_path / "report.dat"))
    assert code == 2 and "WebObs takes only .txt, .csv or .tsv files" in line
    assert not (tmp_path / "report.dat").exists()
    code, line = said("--obscode", "XYZ", "--since", "2999-01-01")
    assert code == 1 and line.startswith("error: no frame with a magnitude to report")
    code, line = said("--obscode", "XYZ", "--json")
    assert code == 2 and "give one of --csv, --json and --aavso" in line


@pytest.mark.xdist_group("aavso-night")
def test_comparison_stars_that_are_no_vsp_sequence_are_warned_about(
    measured_night: Scope, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("name,ra,dec,mag\n" + "".join(
        f"C{n},{s.ra!r},{s.dec!r},{s.mag!r}\n" for n, s in enumerate(STARS[1:])
    ))  # fmt: skip
    scope = stage_scope(tmp_path, comps=str(plain), target=f"{STARS[0].ra} {STARS[0].dec}")
    scope.update(image_watcher={"watch_path": str(measured_night.share)})
    frame = next((measured_night.share / "V TEST_sub").iterdir())
    assert scope.cli("process", str(frame), timeout=120).returncode == 0
    done = scope.cli("export", "--aavso", "--obscode", "XYZ")
    assert done.returncode == 0, done.stderr
    assert "1 observation(s) measured against comparison stars that are no AAVSO VSP" in done.stderr
    assert "1 observation(s) of a target given by its position" in done.stderr
    (row,) = parse(done.stdout)[1]
    assert row["CHART"] == "na" and row["NOTES"].endswith("|COMPS=plain.csv")
    assert row["STARID"] == "J125114.4+404648"


def test_a_reason_from_a_result_is_shown_escaped(tmp_path: Path) -> None:
    from seestar_watch.ledger import Ledger
    from seestar_watch.sources import Version

    scope = Scope(tmp_path)
    hostile = {**MEASURED, "mag": None, "reason": "\x1b[2J\x1b]0;owned\x07 target not in field"}
    with Ledger.exclusive(scope.ledger) as ledger:
        for n, result in enumerate([MEASURED, hostile]):
            ledger.add_pending(Version(f"V_sub/{n}.fit", 100, n), {"OBJECT": "RR Lyr"})
            frame = ledger.claim_next()
            assert frame is not None
            ledger.finish(frame.id, "done", exit_code=0, duration=1.0, result=result)
    done = scope.cli("export", "--aavso", "--obscode", "XYZ")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert "left out: no magnitude: \\x1b[2J" in done.stderr
