"""Several telescopes on one host: instances of a template unit, what two of them may never
share, and one dashboard for all of them."""

from __future__ import annotations

import plistlib
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from seestar_watch.config import load_config
from seestar_watch.config.fleet import Claims, clashes, load_fleet
from seestar_watch.dashboard.overview import Overview
from seestar_watch.dashboard.server import Dashboard, DashboardError
from seestar_watch.ledger import Ledger
from seestar_watch.service import (
    claims_of,
    executable,
    installed_claims,
    installed_instances,
    render_systemd,
)
from seestar_watch.sources import Version
from seestar_watch.sources.local import LocalSource
from tests.harness import Scope, invoke
from tests.test_dashboard import get
from tests.test_service import ANALYZE, EXAMPLE_COMMAND, ROOT, needs_analyze, unit_settings


def telescope(root: Path, name: str, **settings: object) -> Scope:
    """A scope whose ledger and archive are its own (unless `settings` say otherwise)."""
    scope = Scope(root / name)
    scope.update(**settings)  # type: ignore[arg-type]
    return scope


def written(telescope: Scope, **top: object) -> Path:
    """Its config with top-level keys (`scope:`) added."""
    telescope.config_path.write_text(yaml.safe_dump({**telescope.settings, **top}))
    return telescope.config_path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the user units and agents installed so far
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    return home


# -- what two telescopes may not share ----------------------------------------------------


def test_check_config_refuses_two_telescopes_sharing_a_ledger_an_archive_or_a_port(
    tmp_path: Path, home: Path
) -> None:
    north = telescope(tmp_path, "north", dashboard={"listen": "127.0.0.1:8771"})
    south = telescope(
        tmp_path,
        "south",
        state={"path": str(north.ledger)},
        archive={"path": str(north.archive / "south")},  # inside the other's archive
        dashboard={"listen": "0.0.0.0:8771"},
    )
    ran = invoke("check-config", "-c", str(north.config_path), "-c", str(south.config_path))
    assert ran.returncode == 1
    error = ran.stderr.strip()
    assert len(error.splitlines()) == 1  # one line, every clash in it
    assert f"share the ledger {north.ledger}" in error
    assert "share the archive folder" in error
    assert "port 8771" in error


def test_two_telescopes_of_their_own_pass_and_a_scope_name_gives_each_its_own_folders(
    tmp_path: Path, home: Path
) -> None:
    north, south = telescope(tmp_path, "north"), telescope(tmp_path, "south")
    for scope in (north, south):  # the defaults: the user's state and data folders
        del scope.settings["state"], scope.settings["archive"]
    same = invoke(
        "check-config", "-c", str(written(north)), "-c", str(written(south))
    )  # no scope names: one default ledger for both
    assert same.returncode == 1 and "share the ledger" in same.stderr
    ran = invoke(
        "check-config",
        "-c",
        str(written(north, scope="north")),
        "-c",
        str(written(south, scope="south")),
    )
    assert ran.returncode == 0, ran.stderr
    assert "2 configs ok, none shared" in ran.stdout
    state = home / ".local" / "state" / "seestar-watch"
    assert load_config(north.config_path).state.ledger == state / "north" / "ledger.sqlite3"
    archive = load_config(south.config_path).archive.folder
    assert archive == home / ".local" / "share" / "seestar-watch" / "south" / "archive"


def test_a_scope_name_must_be_a_name(tmp_path: Path) -> None:
    north = telescope(tmp_path, "north")
    ran = invoke("check-config", "-c", str(written(north, scope="../../etc")))
    assert ran.returncode == 1
    assert "scope: expected a name of letters, digits" in ran.stderr


def test_clashes_name_each_pair_once() -> None:
    claims = [
        Claims("a", Path("/l/a.sqlite3"), Path("/arch"), 8765),
        Claims("b", Path("/l/b.sqlite3"), Path("/arch2"), 8766),
        Claims("c", Path("/l/c.sqlite3"), None, None),
    ]
    assert clashes(claims) == []  # /arch2 is beside /arch, not in it
    claims.append(Claims("d", Path("/l/a.sqlite3"), None, 8765))
    found = clashes(claims)
    assert len(found) == 2 and all(problem.startswith("a and d") for problem in found)


# -- instances of the template unit ---------------------------------------------------------


def test_service_install_instance_writes_the_template_and_a_drop_in_per_telescope(
    tmp_path: Path, home: Path
) -> None:
    north, south = telescope(tmp_path, "north"), telescope(tmp_path, "south")
    south.update(dashboard={"listen": "127.0.0.1:8772"})
    for name, scope in (("north", north), ("south", south)):
        ran = invoke(
            "service", "install", "--user", "--instance", name, "-c", str(scope.config_path)
        )
        assert ran.returncode == 0, ran.stderr
        assert f"systemctl --user enable --now seestar-watch@{name}.service" in ran.stdout
    units = home / ".config" / "systemd" / "user"
    template = units / "seestar-watch@.service"
    settings = unit_settings(template.read_text())
    assert settings["ExecStart"] == [f"{' '.join(executable())} run"]  # the config: per instance
    drop_in = units / "seestar-watch@south.service.d" / "instance.conf"
    assert f'"SEESTAR_WATCH_CONFIG={south.config_path}"' in drop_in.read_text()
    assert installed_instances([units]) == {"north": north.config_path, "south": south.config_path}

    # a third that would share north's ledger is refused, and nothing of it is written
    west = telescope(tmp_path, "west", state={"path": str(north.ledger)})
    refused = invoke(
        "service", "install", "--user", "--instance", "west", "-c", str(west.config_path)
    )
    assert refused.returncode == 1
    assert "the installed north" in refused.stderr and "share the ledger" in refused.stderr
    assert not (units / "seestar-watch@west.service.d").exists()
    # and check-config says the same of it, against what is installed
    checked = invoke("check-config", "-c", str(west.config_path))
    assert checked.returncode == 1 and "the installed north" in checked.stderr

    # installing north again (a new config, say) is not a clash with itself
    again = invoke(
        "service", "install", "--user", "--instance", "north", "-c", str(north.config_path)
    )
    assert again.returncode == 0, again.stderr

    for name, scope in (("north", north), ("south", south)):
        removed = invoke(
            "service", "uninstall", "--user", "--instance", name, "-c", str(scope.config_path)
        )
        assert removed.returncode == 0, removed.stderr
    assert "no instance uses it any more" in removed.stdout
    assert not template.exists() and installed_instances([units]) == {}


def test_an_instance_name_is_refused_when_it_is_not_a_name(tmp_path: Path, home: Path) -> None:
    north = telescope(tmp_path, "north")
    ran = invoke(
        "service", "install", "--user", "--instance", "a b/c", "-c", str(north.config_path)
    )
    assert ran.returncode == 2 and "--instance" in ran.stderr


def test_a_launchd_instance_is_an_agent_of_its_own(tmp_path: Path, home: Path) -> None:
    north = telescope(tmp_path, "north")
    ran = invoke(
        "service", "install", "--launchd", "--instance", "north", "-c", str(north.config_path)
    )
    assert ran.returncode == 0, ran.stderr
    plist = home / "Library" / "LaunchAgents" / "local.seestar-watch.north.plist"
    agent = plistlib.loads(plist.read_bytes())
    assert agent["Label"] == "local.seestar-watch.north"
    assert agent["StandardOutPath"].endswith("seestar-watch-north.log")
    assert agent["ProgramArguments"][-2:] == ["--config", str(north.config_path)]
    assert installed_instances([plist.parent]) == {"north": north.config_path}


def test_the_repository_template_is_the_rendered_one() -> None:
    rendered = render_systemd(
        EXAMPLE_COMMAND,
        Path("/etc/seestar-watch/north.yaml"),
        user=False,
        run_as="seestar",
        instance="north",
    )
    [(path, template)] = rendered.also.items()
    assert path == Path("/etc/systemd/system/seestar-watch@.service")
    assert (ROOT / "systemd" / "seestar-watch@.service").read_text() == template
    settings = unit_settings(template)
    assert settings["Description"] == [
        "seestar-watch for the telescope %i: photometry for every frame"
    ]
    assert "StateDirectory" in settings and "WatchdogSec" in settings


@needs_analyze
def test_systemd_analyze_verifies_an_instance_of_the_template(tmp_path: Path) -> None:
    rendered = render_systemd(
        executable(), tmp_path / "north.yaml", user=False, run_as="root", instance="north"
    )
    [template] = rendered.also.values()
    unit = tmp_path / "seestar-watch@north.service"
    unit.write_text(template)
    drop_ins = tmp_path / "seestar-watch@north.service.d"
    drop_ins.mkdir()
    (drop_ins / "instance.conf").write_text(rendered.text)
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


# -- one page for all of them -----------------------------------------------------------


def filled(path: Path, frames: list[tuple[str, str]]) -> None:
    ledger = Ledger.open(path)
    for n, (name, state) in enumerate(frames):
        ledger.add_pending(Version(name, 100, n), {"OBJECT": "M 42"})
        frame = ledger.claim_next()
        assert frame is not None
        ledger.finish(frame.id, state, exit_code=0 if state == "done" else 3, duration=1.0)
    ledger.close()


def test_one_dashboard_serves_each_telescope_and_labels_the_metrics(tmp_path: Path) -> None:
    north, south = tmp_path / "north.sqlite3", tmp_path / "south.sqlite3"
    filled(north, [("a.fit", "done"), ("b.fit", "done")])
    filled(south, [("<c>.fit", "failed")])
    source = LocalSource(str(tmp_path))
    with Ledger.reading(north) as one, Ledger.reading(south) as two:
        overviews = [
            Overview(one, source, lambda: {"running": True, "share": "up"}, name="north"),
            Overview(two, source, lambda: {"running": False}, name="south"),
        ]
        dashboard = Dashboard(overviews, ("127.0.0.1", 0))
        dashboard.start()
        try:
            port = int(dashboard.url.rsplit(":", 1)[1].strip("/"))
            status, _, page = get(port, "/")
            assert status == 200 and b'src="static/fleet.js"' in page
            assert get(port, "/api/fleet")[2] == b'{"scopes": ["north", "south"]}'
            _, _, own = get(port, "/scope/south/")
            assert b'src="static/app.js"' in own  # a telescope's own page, as the daemon's
            _, _, answer = get(port, "/scope/south/api/status")
            assert b'"scope": "south"' in answer and b'"failed": 1' in answer
            assert get(port, "/scope/east/api/status")[0] == 404
            assert get(port, "/scope/south")[0] == 404
            _, _, text = get(port, "/metrics")
        finally:
            dashboard.stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }
    assert samples["seestar_watch_frames", (("scope", "north"), ("state", "done"))] == 2
    assert samples["seestar_watch_frames", (("scope", "south"), ("state", "failed"))] == 1
    assert samples["seestar_watch_daemon_running", (("scope", "north"),)] == 1
    assert samples["seestar_watch_daemon_running", (("scope", "south"),)] == 0
    assert samples["seestar_watch_share_up", (("scope", "north"),)] == 1
    assert ("seestar_watch_share_up", (("scope", "south"),)) not in samples


def test_a_fleet_file_names_the_configs_relative_to_itself(tmp_path: Path) -> None:
    north, south = telescope(tmp_path, "north"), telescope(tmp_path, "south")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "fleet: [north/config.yaml, south/config.yaml]\ndashboard: {listen: 127.0.0.1:8799}\n"
    )
    loaded = load_fleet(fleet)
    assert loaded is not None and load_fleet(north.config_path) is None  # a config is no fleet
    assert loaded.configs == (north.config_path, south.config_path)
    assert loaded.listen == ("127.0.0.1", 8799)
    fleet.write_text("fleet: north/config.yaml\npipeline: {}\n")
    ran = invoke("dashboard", "-c", str(fleet))
    assert ran.returncode == 1
    assert "pipeline: unknown key in a fleet file" in ran.stderr
    assert "fleet: expected a list of config files" in ran.stderr


def test_a_system_units_default_folders_are_the_services_not_the_callers(
    tmp_path: Path, home: Path
) -> None:
    """A system unit keeps its default ledger and archive in /var/lib/seestar-watch: a config
    of yours with the defaults does not share them, two system instances with them do."""
    system, user = tmp_path / "etc-systemd-system", home / ".config" / "systemd" / "user"
    configs = {}
    for name in ("north", "south", "mine"):
        scope = telescope(tmp_path, name, dashboard={"listen": "off"})
        del scope.settings["state"], scope.settings["archive"]
        configs[name] = written(scope)
    for name, folder in (("north", system), ("south", system)):
        drop_in = folder / f"seestar-watch@{name}.service.d" / "instance.conf"
        drop_in.parent.mkdir(parents=True)
        drop_in.write_text(f'[Service]\nEnvironment="SEESTAR_WATCH_CONFIG={configs[name]}"\n')
    claims, warnings = installed_claims([system, user], system, exclude=[], instance=None)
    assert warnings == []
    assert claims[0].ledger == Path("/var/lib/seestar-watch/ledger.sqlite3")
    mine = claims_of("mine", load_config(configs["mine"]), system=False)
    assert mine.ledger == home / ".local" / "state" / "seestar-watch" / "ledger.sqlite3"
    found = clashes([mine, *claims])
    assert len(found) == 2 and all("the installed north" in p for p in found)  # north & south
    assert all("the installed south" in p for p in found)


def test_two_telescopes_of_one_name_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    filled(path, [])
    with Ledger.reading(path) as ledger:
        twins = [Overview(ledger, LocalSource(str(tmp_path)), dict, name="north")] * 2
        with pytest.raises(DashboardError, match="the same name: give each a `scope:`"):
            Dashboard(twins, ("127.0.0.1", 0))
