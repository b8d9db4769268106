"""systemd unit and launchd agent: rendered files, systemd-analyze, install, sd_notify."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from seestar_watch.service import Rendered, executable, install, render_launchd, render_systemd
from tests.conftest import wait_for, write_frame
from tests.harness import Scope, run_cli

ROOT = Path(__file__).parent.parent
EXAMPLE_COMMAND = ["/usr/local/bin/seestar-watch"]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)"
)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_repository_files_are_the_rendered_templates() -> None:
    unit = render_systemd(
        EXAMPLE_COMMAND, Path("/etc/seestar-watch/config.yaml"), user=False, run_as="seestar"
    )
    assert (ROOT / "systemd" / "seestar-watch.service").read_text() == unit.text
    agent = render_launchd(
        EXAMPLE_COMMAND,
        Path("/Users/you/Library/Application Support/seestar-watch/config.yaml"),
        home=Path("/Users/you"),
    )
    assert (ROOT / "launchd" / "local.seestar-watch.plist").read_text() == agent.text


def test_the_unit_says_what_the_service_needs() -> None:
    settings = unit_settings((ROOT / "systemd" / "seestar-watch.service").read_text())
    assert settings["Type"] == ["notify"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["1 2"]
    assert settings["KillMode"] == ["mixed"]
    assert int(settings["TimeoutStopSec"][0]) > 30 + 5  # shutdown_grace + TERM->KILL grace
    assert "network-online.target" in settings["After"][0]
    assert "remote-fs.target" in settings["After"][0]
    assert "Requires" not in settings and "RequiresMountsFor" not in settings
    for hardening in (
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictNamespaces",
        "SystemCallArchitectures",
        "StateDirectory",
    ):
        assert hardening in settings, hardening
    assert "MemoryDenyWriteExecute" not in settings and "PrivateNetwork" not in settings
    assert settings["ExecStart"] == [
        "/usr/local/bin/seestar-watch run --config /etc/seestar-watch/config.yaml"
    ]


def verifiable(text: str, tmp_path: Path, name: str = "seestar-watch.service") -> Path:
    """The unit with ExecStart pointing at this machine's real executable (verify checks it)."""
    real = " ".join(executable())
    path = tmp_path / name
    path.write_text(text.replace("/usr/local/bin/seestar-watch", real))
    return path


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    unit = verifiable((ROOT / "systemd" / "seestar-watch.service").read_text(), tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    for name in ("mnt-seestar.mount", "mnt-seestar.automount"):
        result = subprocess.run(
            [ANALYZE, "verify", str(ROOT / "systemd" / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_analyze
def test_systemd_analyze_security_rates_it_2_or_better(tmp_path: Path) -> None:
    unit = verifiable((ROOT / "systemd" / "seestar-watch.service").read_text(), tmp_path)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout[-500:] + result.stderr
    assert float(found.group(1)) <= 2.0


@needs_analyze
def test_the_user_unit_verifies_too(tmp_path: Path) -> None:
    unit = render_systemd(executable(), tmp_path / "config.yaml", user=True, home=tmp_path)
    path = tmp_path / "seestar-watch.service"
    path.write_text(unit.text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [ANALYZE, "verify", "--user", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert result.returncode == 0, result.stderr


def test_the_launchd_agent_parses_with_the_keys_launchd_needs() -> None:
    agent = plistlib.loads((ROOT / "launchd" / "local.seestar-watch.plist").read_bytes())
    assert agent["Label"] == "local.seestar-watch"
    assert all(a.startswith("/") for a in agent["ProgramArguments"][:1])
    assert agent["ProgramArguments"][1:3] == ["run", "--config"]
    assert os.path.isabs(agent["ProgramArguments"][3])
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ThrottleInterval"] >= 10
    assert "/usr/bin" in agent["EnvironmentVariables"]["PATH"]
    assert agent["StandardOutPath"].startswith("/Users/you/Library/Logs/seestar-watch/")
    assert agent["StandardErrorPath"] == agent["StandardOutPath"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def cli(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return run_cli(*args, env=env, cwd=cwd)


def test_service_install_and_uninstall_as_a_user_unit(home: Path, tmp_path: Path) -> None:
    scope = Scope(tmp_path / "scope")
    installed = cli(home, "service", "install", "--systemd", "--user", "-c", str(scope.config_path))
    assert installed.returncode == 0, installed.stderr
    unit = home / ".config" / "systemd" / "user" / "seestar-watch.service"
    text = unit.read_text()
    assert f"--config {scope.config_path}" in text
    assert "systemctl --user enable --now seestar-watch.service" in installed.stdout
    removed = cli(home, "service", "uninstall", "--systemd", "--user", "-c", str(scope.config_path))
    assert removed.returncode == 0 and not unit.exists()
    assert f"removed {unit}" in removed.stdout


def test_service_install_launchd_creates_its_log_folder(home: Path, tmp_path: Path) -> None:
    scope = Scope(tmp_path / "scope")
    installed = cli(home, "service", "install", "--launchd", "-c", str(scope.config_path))
    assert installed.returncode == 0, installed.stderr
    plist = home / "Library" / "LaunchAgents" / "local.seestar-watch.plist"
    agent = plistlib.loads(plist.read_bytes())
    assert Path(agent["StandardOutPath"]).parent.is_dir()
    assert agent["ProgramArguments"][-1] == str(scope.config_path)
    assert "launchctl bootstrap gui/$(id -u)" in installed.stdout


def test_service_install_print_for_a_system_unit(home: Path, tmp_path: Path) -> None:
    scope = Scope(tmp_path / "scope")
    printed = cli(home, "service", "install", "--systemd", "--print", "-c", str(scope.config_path))
    assert printed.returncode == 0
    settings = unit_settings(printed.stdout)
    assert settings["Type"] == ["notify"] and "User" in settings
    assert settings["ExecStart"][0].split()[0].startswith("/")
    assert f"-{scope.ledger.parent}" in settings["ReadWritePaths"][0]  # configured state.path
    assert not (home / ".config" / "systemd").exists()


def test_service_install_checks_the_config_first(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_watcher:\n  watch_path: /x\n")
    result = cli(home, "service", "install", "--user", "-c", str(bad))
    assert result.returncode == 1
    assert "pipeline: required section is missing" in result.stderr
    assert not (home / ".config" / "systemd").exists()


def test_a_user_unit_says_to_enable_lingering(home: Path, tmp_path: Path) -> None:
    scope = Scope(tmp_path / "scope")
    installed = cli(home, "service", "install", "--user", "-c", str(scope.config_path))
    assert installed.returncode == 0, installed.stderr
    assert "loginctl enable-linger" in installed.stdout
    assert "stops at logout" in installed.stdout


@pytest.mark.parametrize(
    "flags", [["--systemd", "--launchd"], ["--launchd", "--systemd"], ["--launchd", "--user"]]
)
def test_contradictory_service_flags_are_a_usage_error(
    home: Path, tmp_path: Path, flags: list[str]
) -> None:
    scope = Scope(tmp_path / "scope")
    for verb in ("install", "uninstall"):
        result = cli(home, "service", verb, *flags, "-c", str(scope.config_path))
        assert result.returncode == 2, result.stderr
        assert "Error:" in result.stderr
    assert not (home / "Library").exists() and not (home / ".config" / "systemd").exists()


def test_the_readme_quicklook_example_can_write_under_the_system_unit(
    home: Path, tmp_path: Path
) -> None:
    # ProtectHome=read-only: the CSV's folder must be in ReadWritePaths, and exist
    scope = Scope(tmp_path / "scope")
    csv = home / "seestar" / "quicklook.csv"
    scope.update(pipeline={"command": ["seestar-watch", "quicklook", "{path}", "--csv", str(csv)]})
    printed = cli(home, "service", "install", "--systemd", "--print", "-c", str(scope.config_path))
    assert printed.returncode == 0, printed.stderr
    writable = unit_settings(printed.stdout)["ReadWritePaths"][0].split()
    assert f"-{csv.parent}" in writable and f"-{scope.archive}" in writable
    settings = unit_settings(printed.stdout)
    assert settings["ProtectHome"] == ["read-only"]


def test_service_install_checks_what_run_would_check(home: Path, tmp_path: Path) -> None:
    scope = Scope(tmp_path / "scope")
    scope.update(pipeline={"command": ["python3", "my_photometry.py", "{path}"]})
    result = cli(home, "service", "install", "--user", "-c", str(scope.config_path))
    assert result.returncode == 1
    assert "my_photometry.py: no such file (looked in" in result.stderr
    assert not (home / ".config" / "systemd").exists()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = f"seestar-watch-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(0.2)
    yield sock, address
    sock.close()


def test_notify_ready_status_watchdog_stopping_and_no_injection(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = notify_socket
    scope = Scope(tmp_path / "scope")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    daemon = scope.start()
    messages: list[str] = []

    def receive() -> None:
        try:
            while True:
                messages.append(sock.recv(65536).decode())
        except TimeoutError:
            pass

    try:
        wait_for(lambda: receive() or any("READY=1" in m for m in messages), timeout=20)
        hostile = "evil\nREADY=0\nSTATUS=pwned\nSTOPPING=1.fit"
        write_frame(scope.share / "M 42_sub" / hostile)
        wait_for(scope.runs, timeout=20)
        wait_for(lambda: receive() or any("evil" in m for m in messages), timeout=20)
        wait_for(lambda: receive() or sum(m == "WATCHDOG=1" for m in messages) >= 2, timeout=10)
        assert daemon.stop(signal.SIGTERM) == 0
        receive()
    finally:
        daemon.close()
    lines = [line for message in messages for line in message.split("\n")]
    keys = [line.split("=", 1)[0] for line in lines]
    assert set(keys) <= {"READY", "STATUS", "WATCHDOG", "STOPPING"}
    assert keys.count("READY") == 1 and "READY=1" in lines
    assert (
        keys.count("STOPPING") == 1
        and lines[-2:] == ["STOPPING=1", lines[-1]]
        and lines[-1].startswith("STATUS=stopping")
    )
    assert "STATUS=pwned" not in lines
    status = next(line for line in lines if "evil" in line)
    assert status.startswith("STATUS=") and "last frame evil\\nREADY=0" in status
    assert scope.runs()[0]["leaked"] == []  # the pipeline never sees NOTIFY_SOCKET or WATCHDOG_*


def test_the_status_line_counts_the_folders_holding_frames(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = notify_socket
    scope = Scope(tmp_path / "scope")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    write_frame(scope.share / "M 81_sub" / "b.fit")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    daemon = scope.start()
    messages: list[str] = []

    def receive() -> None:
        try:
            while True:
                messages.append(sock.recv(65536).decode())
        except TimeoutError:
            pass

    try:  # STATUS= is sent every 5 s when it changed
        wait_for(lambda: receive() or any("(2 folders)" in m for m in messages), timeout=20)
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.close()
    assert not any("(0 folders)" in m for m in messages[1:])


def test_without_notify_socket_nothing_is_sent() -> None:
    from seestar_watch.notify import Notifier

    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")  # does nothing, raises nothing
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 30.0


def test_install_creates_the_folders_the_service_writes_for_its_user(tmp_path: Path) -> None:
    import pwd

    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    rendered = Rendered(
        "[Unit]\n",
        tmp_path / "system" / "seestar-watch.service",
        enable=[],
        stop=[],
        folders=[tmp_path / "system"],
        data_folders=[tmp_path / "home" / "seestar"],
        run_as="nobody",
    )
    install(rendered)
    nobody = pwd.getpwnam("nobody").pw_uid
    assert (tmp_path / "home" / "seestar").stat().st_uid == nobody
    assert (tmp_path / "home").stat().st_uid == nobody  # created too, so also the user's
    assert (tmp_path / "system").stat().st_uid == 0


def test_a_system_unit_warns_of_what_its_private_tmp_would_hide(home: Path, tmp_path: Path) -> None:
    from seestar_watch.config import parse_config
    from seestar_watch.service import private_tmp_problems

    scope = Scope(tmp_path / "scope")  # pytest's tmp_path lies under /tmp
    printed = cli(home, "service", "install", "--systemd", "--print", "-c", str(scope.config_path))
    assert printed.returncode == 0 and "PrivateTmp=yes" in printed.stdout
    warned = printed.stderr.splitlines()
    assert any(line.startswith("warning: the config file is under /tmp") for line in warned)
    assert any(line.startswith("warning: the ledger (state.path) is under /tmp") for line in warned)
    user = cli(
        home, "service", "install", "--systemd", "--user", "--print", "-c", str(scope.config_path)
    )
    assert "warning" not in user.stderr  # a user unit has no private /tmp
    elsewhere = {
        "image_watcher": {"watch_path": "/mnt/seestar/MyWorks"},
        "pipeline": {"command": ["true"]},
        "archive": {"path": "/srv/seestar/archive"},
        "state": {"path": "/srv/seestar/ledger.sqlite3"},
    }
    assert private_tmp_problems(parse_config(elsewhere, Path("/etc/seestar/config.yaml"))) == []
