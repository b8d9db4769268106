"""A pipeline's result ($SEESTAR_WATCH_RESULT): read bounded, kept in the ledger, shown."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from seestar_watch.results import RESULT_LIMIT, ResultProblem, read_result, result_file
from tests.conftest import write_frame
from tests.harness import Scope


@pytest.fixture
def scope(tmp_path: Path) -> Scope:
    return Scope(tmp_path)


def frame(scope: Scope, name: str) -> Path:
    return write_frame(scope.share / "M 42_sub" / name)


def written(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "result.json"
    path.write_bytes(data)
    return str(path)


def test_one_object_of_scalars_is_the_result(tmp_path: Path) -> None:
    data = b'{"fwhm_px": 3.2, "stars": 41, "ok": true, "note": "thin cloud", "snr": null}'
    assert read_result(written(tmp_path, data)) == {
        "fwhm_px": 3.2,
        "stars": 41,
        "ok": True,
        "note": "thin cloud",
        "snr": None,
    }
    assert read_result(written(tmp_path, b"  \n")) is None  # the command wrote nothing
    assert read_result(str(tmp_path / "removed.json")) is None


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"[1, 2]", "a JSON array, not an object"),
        (b'"text"', "a JSON string, not an object"),
        (b'{"a": {"b": 1}}', "the value of 'a' is a JSON object"),
        (b'{"a": [1]}', "the value of 'a' is a JSON array"),
        (b'{"a": NaN}', "NaN, which is not JSON"),
        (b'{"a": 1e999}', "not a finite number"),
        (b'{"a": 1', "not JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": "' + b"x" * RESULT_LIMIT + b'"}', "larger than 64 KiB"),
    ],
)
def test_anything_else_is_refused_with_the_reason(tmp_path: Path, data: bytes, says: str) -> None:
    with pytest.raises(ResultProblem, match=says):
        read_result(written(tmp_path, data))


def test_a_fifo_or_a_link_is_refused_without_waiting_or_following(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ResultProblem, match="not a regular file"):
        read_result(str(fifo))  # no writer: a plain open would wait forever
    link = tmp_path / "link"
    link.symlink_to(written(tmp_path, b'{"a": 1}'))
    with pytest.raises(ResultProblem, match="cannot open it"):
        read_result(str(link))


def test_the_result_file_is_private_and_removed_afterwards() -> None:
    with result_file() as path:
        assert os.stat(path).st_mode & 0o077 == 0 and os.path.getsize(path) == 0
    assert not os.path.exists(path)


def status_of(scope: Scope) -> dict:
    result = scope.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_what_the_command_writes_is_recorded_and_the_file_removed(scope: Scope) -> None:
    scope.update(pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": 41}'}})
    path = frame(scope, "a.fit")
    result = scope.cli("process", str(path))
    assert result.returncode == 0, result.stderr
    (run,) = scope.runs()
    assert run["result_path"] and not os.path.exists(run["result_path"])
    (shown,) = status_of(scope)["frames"]
    assert shown["result"] == {"stars": 41}


@pytest.mark.parametrize("kind", ["bad", "fifo", "symlink", "folder"])
def test_an_unusable_result_is_a_warning_naming_the_frame_and_the_frame_is_done(
    scope: Scope, kind: str
) -> None:
    env = {**scope.settings["pipeline"]["env"], "RESULT": "[1, 2]"}
    if kind != "bad":
        env.update(RESULT_AS=kind, RESULT="/etc/passwd")
    scope.update(pipeline={"env": env})
    path = frame(scope, "<b>.fit")
    result = scope.cli("process", str(path), timeout=30)  # a FIFO must not hold the worker
    assert result.returncode == 0, result.stderr
    (warning,) = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if '"pipeline.result_ignored"' in line
    ]
    assert warning["frame"] == "M 42_sub/<b>.fit" and warning["reason"]
    (shown,) = status_of(scope)["frames"]
    assert shown["state"] == "done" and shown["result"] is None
    (run,) = scope.runs()  # whatever the command put in its place is gone, and its folder
    assert not os.path.lexists(run["result_path"])
    assert not os.path.lexists(os.path.dirname(run["result_path"]))
    assert os.path.exists("/etc/passwd")


def test_a_failed_run_records_no_result(scope: Scope) -> None:
    scope.update(
        pipeline={
            "retries": 0,
            "env": {**scope.settings["pipeline"]["env"], "RESULT": '{"a": 1}', "BEHAVIOUR": "fail"},
        }
    )
    path = frame(scope, "a.fit")
    assert scope.cli("process", str(path)).returncode == 1
    (shown,) = status_of(scope)["frames"]
    assert shown["state"] == "failed" and shown["result"] is None


def processed(scope: Scope, names_and_results: list[tuple[str, str]]) -> list[Path]:
    paths = []
    for name, result in names_and_results:
        scope.update(pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": result}})
        paths.append(frame(scope, name))
        assert scope.cli("process", str(paths[-1])).returncode == 0
    return paths


def test_status_shows_the_most_useful_result_fields(scope: Scope) -> None:
    processed(
        scope, [("a.fit", '{"zz": 1, "stars": 41, "fwhm_arcsec": 3.14159, "x": "\\u001b[2J"}')]
    )
    table = scope.cli("status").stdout
    assert "fwhm_arcsec=3.142 stars=41 zz=1 x=\\x1b[2J" in table  # escaped: no terminal control


def test_export_writes_header_fields_state_and_every_result_field(scope: Scope) -> None:
    processed(
        scope,
        [("a.fit", '{"stars": 41, "fwhm_px": 3.5}'), ("=cmd|calc.fit", '{"stars": 7, "snr": 9}')],
    )
    import csv
    import io

    result = scope.cli("export")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "source", "OBJECT", "DATE-OBS", "EXPTIME", "FILTER", "state", "attempts", "exit_code",
        "reason", "stars", "fwhm_px", "snr",
    ]  # fmt: skip
    assert rows[0]["OBJECT"] == "M 94" and rows[0]["DATE-OBS"] == "2025-03-27T01:20:32.955368"
    assert rows[0]["EXPTIME"] == "10.0" and rows[0]["FILTER"] == "IRCUT"
    assert rows[0]["state"] == "done" and rows[0]["stars"] == "41" and rows[0]["snr"] == ""
    assert rows[1]["source"].endswith("=cmd|calc.fit") and rows[1]["snr"] == "9"
    lines = scope.cli("export", "--json").stdout.splitlines()
    assert [json.loads(line)["result"] for line in lines] == [
        {"stars": 41, "fwhm_px": 3.5},
        {"stars": 7, "snr": 9},
    ]
    assert json.loads(lines[0])["observed_at"] == "2025-03-27T01:20:32Z"


def test_export_never_hands_a_spreadsheet_a_formula(scope: Scope, tmp_path: Path) -> None:
    scope.update(image_watcher={"watch_path": str(scope.share / "M 42_sub")})
    processed(scope, [("=HYPERLINK(1).fit", '{"note": "@SUM(A1)", "mag": -10.5}')])
    out = tmp_path / "night.csv"
    result = scope.cli("export", "--csv", "-o", str(out))
    assert result.returncode == 0 and "1 frame(s) written" in result.stderr
    import csv

    with out.open() as lines:
        (row,) = list(csv.DictReader(lines))
    assert row["note"] == "'@SUM(A1)" and row["mag"] == "-10.5"  # numbers stay numbers


def test_export_since(scope: Scope) -> None:
    processed(scope, [("a.fit", "{}")])
    assert len(scope.cli("export", "--json", "--since", "1h").stdout.splitlines()) == 1
    assert scope.cli("export", "--json", "--since", "2999-01-01").stdout == ""
    bad = scope.cli("export", "--since", "yesterday")
    assert bad.returncode == 2 and "give a time ago (12h, 30m, 2d)" in bad.stderr
    both = scope.cli("export", "--csv", "--json")
    assert both.returncode == 2 and "give one of --csv, --json and --aavso" in both.stderr
    unwritable = scope.cli("export", "-o", "/proc/nope/x.csv")
    assert unwritable.returncode == 1 and unwritable.stderr.startswith("error: cannot write")


def test_parse_since() -> None:
    from seestar_watch.report import parse_since

    assert parse_since("90m", now=10_000.0) == 10_000.0 - 5400
    assert parse_since("2d", now=200_000.0) == 200_000.0 - 172_800
    assert parse_since("2026-11-23T18:00+00:00") == 1_795_456_800.0


def test_status_lines_are_short_say_when_the_frame_was_taken_and_its_magnitude(
    scope: Scope,
) -> None:
    result = {"fwhm_arcsec": 9.75, "fwhm_px": 4.08, "stars": 329, "background": 763.0,
              "inst_mag": -12.515, "snr": 679.0}  # fmt: skip
    scope.update(
        pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": json.dumps(result)}}
    )
    path = frame(scope, "Light_NGC 7023_10.0s_IRCUT_20240730-224436.fit")
    assert scope.cli("process", str(path)).returncode == 0
    line = scope.cli("status").stdout.splitlines()[-1]
    (shown,) = status_of(scope)["frames"]
    taken = datetime.fromisoformat(shown["observed_at"]).astimezone()
    assert line.startswith(taken.isoformat(timespec="minutes"))  # the observation, local, zoned
    assert "  M 42_sub/Light_NGC 7023_10.0s_IRCUT_20240730-224436.fit" in line  # the relpath
    assert line.endswith("fwhm_arcsec=9.75 stars=329 inst_mag=-12.52 snr=679")
    assert str(scope.share) not in line and len(line) < 170  # the name itself is 54
