"""The command line as a user runs it: real subprocesses and click's runner on real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from seestar_watch import __version__
from seestar_watch.cli import cli
from tests.harness import run_cli

EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"


def test_version_and_help() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout
    help_text = run_cli("--help")
    assert help_text.returncode == 0
    assert "check-config" in help_text.stdout


def test_help_does_not_import_astropy_numpy_or_watchdog() -> None:
    probe = (
        "import sys\n"
        "from seestar_watch.cli import cli\n"
        "try:\n"
        "    cli(['--help'], prog_name='seestar-watch')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('astropy', 'numpy', 'watchdog') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY []" in result.stdout


def test_check_config_on_the_example_prints_a_summary() -> None:
    result = CliRunner().invoke(cli, ["check-config", "-c", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "/mnt/seestar/MyWorks" in result.output
    assert "config ok" in result.output


def test_check_config_lists_all_problems_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("image_watcher:\n  watch_path: /x\n  debounce_delay: abc\n  observe: auto\n")
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 1
    assert "image_watcher.debounce_delay: expected a number >= 0 and at most" in result.stderr
    assert "did you mean 'observer'?" in result.stderr
    assert "pipeline: required section is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_without_any_config_says_where_it_looked(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c")}
    result = subprocess.run(
        [sys.executable, "-m", "seestar_watch", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "no config file found; looked at:" in result.stderr
    assert str(tmp_path / "config.yaml") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_from_the_environment_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "seestar_watch", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SEESTAR_WATCH_CONFIG": str(EXAMPLE)},
    )
    assert result.returncode == 0, result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2


def test_retry_needs_either_failed_or_paths() -> None:
    result = run_cli("retry", "-c", str(EXAMPLE))
    assert result.returncode == 2
    assert "give either --failed or one or more FRAMEs" in result.stderr


def test_numbers_on_the_command_line_have_bounds_too(tmp_path: Path) -> None:
    (tmp_path / "share").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f'image_watcher:\n  watch_path: {tmp_path / "share"}\npipeline:\n  command: ["true"]\n'
        f"state:\n  path: {tmp_path / 'ledger.sqlite3'}\n"
    )
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    for args in (["status", "--limit", "9" * 30], ["check-mount", "--timeout", "1e20"]):
        result = run_cli(*args, "-c", str(config))
        assert result.returncode == 2, result.stderr  # a usage error, not "this is a bug"
        assert "is not in the range" in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    from seestar_watch.ledger import Ledger
    from seestar_watch.sources import Version

    (tmp_path / "share").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"image_watcher:\n  watch_path: {tmp_path / 'share'}\npipeline:\n  command: [echo]\n"
        f"state:\n  path: {tmp_path / 'ledger.sqlite3'}\n"
    )
    with Ledger.exclusive(tmp_path / "ledger.sqlite3") as ledger:  # a long night's rows
        ledger.record_baseline(Version(f"M 42_sub/{n}.fit", 1, n) for n in range(20000))
    for args in (["export", "--csv"], ["check-config"], ["status", "--limit", "5000"]):
        command = [sys.executable, "-m", "seestar_watch", *args, "-c", str(config)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
            assert run.stdout is not None and run.stderr is not None
            run.stdout.readline()
            run.stdout.close()  # `| head -1`
            errors = run.stderr.read().decode()
            assert run.wait(30) in (0, 141), errors  # done first, or told of the closed pipe
        assert errors == "", args
