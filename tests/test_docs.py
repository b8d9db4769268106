"""The README's promises stay true: its Quick start commands, and CI running the same tests."""

from __future__ import annotations

import re
from pathlib import Path

from seestar_watch.cli import cli

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_commands_one_runs_the_program_one_the_tests() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "seestar-watch" in commands[0]
    assert commands[1].endswith(".venv/bin/python -m pytest")
    for command in commands:  # a stock Debian's system pip refuses to install
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert "[test]" not in commands[0]  # the program alone needs no test tools


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick_start_commands()[1] in ci.splitlines()


def test_every_command_is_documented_in_the_readme() -> None:
    for name in cli.list_commands(None):  # type: ignore[arg-type]
        assert f"seestar-watch {name}" in README, name


def test_every_config_key_is_documented_in_the_readme_and_the_example() -> None:
    from dataclasses import fields

    from seestar_watch.config import SECTIONS

    example = (ROOT / "config.example.yaml").read_text()
    for section, cls in SECTIONS.items():
        for spec in fields(cls):
            if not spec.metadata.get("check"):
                continue  # not a key of the file (the config's `scope:`, handed down)
            assert f"`{section}.{spec.name}`" in README, f"{section}.{spec.name}"
            assert f"{spec.name}:" in example, f"{section}.{spec.name}"
    assert "| `scope` |" in README and "\n# scope:" in example  # the one key of no section


def test_the_events_and_flags_a_user_meets_are_documented() -> None:
    for name in ("daemon.stopping", "watcher.started", "watch.subfolders_not_watched"):
        assert f"`{name}`" in README, name
    assert "`-V`" in README and "`-h`" in README
    assert "enable-linger" in README


def test_every_module_is_on_the_architecture_map() -> None:
    architecture = (ROOT / "ARCHITECTURE.md").read_text()
    package = ROOT / "seestar_watch"
    for module in package.rglob("*.py"):
        if module.name in ("__init__.py", "__main__.py") and module.parent == package:
            continue
        relative = module.relative_to(package)
        # each file by its name, in a subfolder too (`sources/poller.py` or `poller.py`):
        # a new module is not on the map until someone says where it stands
        assert f"`{relative}`" in architecture or f"`{relative.name}`" in architecture, relative


def test_the_readme_says_which_writers_the_completeness_check_covers() -> None:
    section = README.split("## What it does with a frame", 1)[1].split("\n## ", 1)[0]
    assert "writers that *append*" in section
    assert "pre-allocation" in section and "set `debounce_delay` above" in section


def test_the_readme_has_an_alerts_section_with_an_example_per_common_channel() -> None:
    section = README.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    for channel, scheme in (
        ("ntfy", "ntfys://"),
        ("Telegram", "tgram://"),
        ("E-mail", "mailtos://"),
    ):
        assert f"### {channel}" in section and scheme in section, channel
    assert "chmod 600" in section


def test_the_readme_documents_results_the_dashboard_and_metrics() -> None:
    assert "$SEESTAR_WATCH_RESULT" in README and "## The dashboard and metrics" in README
    assert "![The dashboard" in README and (ROOT / "docs" / "dashboard.png").is_file()
    for name in ("/api/status", "/api/frames?since=", "/metrics", "seestar_watch_frames"):
        assert name in README, name


def test_the_alert_examples_do_not_fire_on_a_good_night() -> None:
    """quicklook on real S50 subs measures 8.8-11.4" and 68-507 stars; a good night may reach
    16" (seeing) and fewer stars in a sparse field: an example limit must not fire there."""
    example = (ROOT / "config.example.yaml").read_text()
    texts = README + example
    above = [float(n) for n in re.findall(r"fwhm_arcsec: \{above: ([\d.]+)\}", texts)]
    below = [float(n) for n in re.findall(r"stars: \{below: ([\d.]+)\}", texts)]
    assert above and below
    assert min(above) > 16 and max(below) < 50
