"""Config loading: the example is valid, and every kind of problem is reported with its key path."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml

from seestar_watch.config import (
    CONFIG_ENV,
    find_config_file,
    load_config,
    parse_config,
)
from seestar_watch.errors import ConfigError
from tests.harness import run_cli

EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def valid(**watcher: object) -> dict[str, object]:
    section = {"watch_path": "/mnt/seestar/MyWorks", **watcher}
    return {"image_watcher": section, "pipeline": {"command": ["echo", "{path}"]}}


def test_the_example_config_is_valid_and_documents_the_defaults() -> None:
    config = load_config(EXAMPLE)
    watcher = config.image_watcher
    assert watcher.watch_path == Path("/mnt/seestar/MyWorks")
    assert watcher.enabled is True
    assert watcher.debounce_delay == 2.0
    assert watcher.recursive is True  # the Seestar writes into MyWorks/<target>_sub/
    assert watcher.observer == "auto"
    assert watcher.poll_interval == 2.0
    assert watcher.incomplete_timeout == 300
    assert config.pipeline.command[:3] == ("seestar-watch", "quicklook", "{path}")
    assert watcher.rescan_interval == 60 and watcher.ignore == ("Stacked_*", "DSO_Stacked_*")
    pipeline = config.pipeline
    assert (pipeline.timeout, pipeline.retries, pipeline.retry_delay) == (600, 2, 30)
    assert (pipeline.workers, pipeline.shutdown_grace, pipeline.env) == (1, 30, {})
    assert config.archive.enabled is True
    assert config.state.process_existing is False
    assert (config.logging.format, config.logging.level) == ("auto", "info")


def test_a_config_without_recursive_watches_the_target_folders() -> None:
    # the Seestar never writes a frame directly into MyWorks/: recursive is the default
    assert parse_config(valid(), Path("x.yaml")).image_watcher.recursive is True


def test_a_minimal_config_leaves_the_telescopes_own_stacks_alone_as_the_example_does() -> None:
    ignored = parse_config(valid(), Path("x.yaml")).image_watcher.ignore
    assert ignored == ("Stacked_*", "DSO_Stacked_*") == load_config(EXAMPLE).image_watcher.ignore


def test_relative_paths_are_taken_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = valid(watch_path="share/MyWorks", mount_point="share")
    raw["state"] = {"path": "state/ledger.sqlite3"}
    raw["archive"] = {"path": "../archive"}
    monkeypatch.chdir("/")  # the current folder does not matter
    config = parse_config(raw, tmp_path / "etc" / "config.yaml")
    assert config.image_watcher.watch_path == tmp_path / "etc" / "share" / "MyWorks"
    assert config.image_watcher.mount_point == tmp_path / "etc" / "share"
    assert config.state.ledger == tmp_path / "etc" / "state" / "ledger.sqlite3"
    assert config.archive.folder == tmp_path / "archive"
    assert config.folder == tmp_path / "etc"


@pytest.mark.parametrize("level", ["INFO", "Info", "debug", "WARNING"])
def test_choices_are_accepted_in_any_case(level: str) -> None:
    raw = valid(observer="Polling")
    raw["logging"] = {"level": level, "format": "JSON"}
    config = parse_config(raw, Path("x.yaml"))
    assert config.logging.level == level.lower() and config.logging.format == "json"
    assert config.image_watcher.observer == "polling"


def test_incomplete_timeout_is_a_setting() -> None:
    config = parse_config(valid(incomplete_timeout=5), Path("x.yaml"))
    assert config.image_watcher.incomplete_timeout == 5
    with pytest.raises(ConfigError, match="incomplete_timeout: expected a number > 0"):
        parse_config(valid(incomplete_timeout=0), Path("x.yaml"))


def test_optional_sections_default_to_platform_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = parse_config(valid(), Path("x.yaml"))
    assert config.state.ledger == tmp_path / "state" / "seestar-watch" / "ledger.sqlite3"
    assert config.archive.folder == tmp_path / "data" / "seestar-watch" / "archive"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("pipeline", "retries", -1, "pipeline.retries: expected a whole number from 0 to 20"),
        ("pipeline", "workers", 0, "pipeline.workers: expected a whole number from 1 to 64"),
        ("pipeline", "workers", 1.5, "pipeline.workers: expected a whole number from 1 to 64"),
        ("pipeline", "timeout", 0, "pipeline.timeout: expected a number > 0 and at most"),
        ("pipeline", "env", {"A=B": "1"}, "pipeline.env: expected a mapping of NAME: value"),
        ("pipeline", "env", ["A"], "pipeline.env: expected a mapping of NAME: value"),
        ("image_watcher", "ignore", "Stacked_*", "image_watcher.ignore: expected a list"),
        (
            "image_watcher",
            "rescan_interval",
            -5,
            "image_watcher.rescan_interval: expected a number >= 0",
        ),
        ("archive", "enabled", "no", "archive.enabled: expected true or false"),
        ("archive", "path", "", "archive.path: expected a folder path"),
        ("state", "process_existing", 1, "state.process_existing: expected true or false"),
        (
            "logging",
            "format",
            "xml",
            "logging.format: expected one of auto | lines | console | json",
        ),
        (
            "logging",
            "level",
            "loud",
            "logging.level: expected one of debug | info | warning | error",
        ),
    ],
)
def test_later_sections_are_validated_too(
    section: str, key: str, value: object, message: str
) -> None:
    raw = valid()
    raw.setdefault(section, {})
    if section == "pipeline":
        raw["pipeline"] = {"command": ["echo"], key: value}
    else:
        raw[section] = {**raw.get(section, {}), key: value}  # type: ignore[dict-item]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("x.yaml"))
    assert caught.value.problems[0].startswith(message), caught.value.problems


def test_defaults_apply_to_keys_left_out() -> None:
    config = parse_config(valid(), Path("x.yaml"))
    assert config.image_watcher.debounce_delay == 2.0
    assert config.image_watcher.observer == "auto"


def test_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ann")
    config = parse_config(valid(watch_path="~/Seestar/MyWorks"), Path("x.yaml"))
    assert config.image_watcher.watch_path == Path("/home/ann/Seestar/MyWorks")


def test_a_command_string_is_split_once_with_shlex() -> None:
    raw = valid()
    raw["pipeline"] = {"command": "astap -f '{path}' -r 30"}
    config = parse_config(raw, Path("x.yaml"))
    assert config.pipeline.command == ("astap", "-f", "{path}", "-r", "30")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "debounce_delay",
            "abc",
            "image_watcher.debounce_delay: expected a number >= 0 and at most 604800 (a week),"
            " got 'abc'",
        ),
        ("debounce_delay", -1, "image_watcher.debounce_delay: expected a number >= 0 and"),
        ("debounce_delay", True, "image_watcher.debounce_delay: expected a number >= 0 and"),
        ("poll_interval", 0, "image_watcher.poll_interval: expected a number > 0 and at most"),
        ("recursive", "yes please", "image_watcher.recursive: expected true or false"),
        ("enabled", 1, "image_watcher.enabled: expected true or false, got 1"),
        ("observer", "inotify", "image_watcher.observer: expected one of auto | native | polling"),
        ("watch_path", "", "image_watcher.watch_path: expected a folder path, got ''"),
        ("watch_path", 42, "image_watcher.watch_path: expected a folder path, got 42"),
    ],
)
def test_each_bad_value_names_its_key_and_what_was_expected(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(valid(**{key: value}), Path("x.yaml"))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(message)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([], "pipeline.command: expected a non-empty list of strings"),
        ("", "pipeline.command: expected a non-empty list of strings"),
        (["echo", 3], "pipeline.command: expected a non-empty list of strings"),
        ({"run": "x"}, "pipeline.command: expected a non-empty list of strings"),
        ("echo 'unclosed", "pipeline.command: cannot split the command"),
    ],
)
def test_bad_commands(command: object, message: str) -> None:
    raw = valid()
    raw["pipeline"] = {"command": command}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("x.yaml"))
    assert caught.value.problems[0].startswith(message)


def test_unknown_keys_suggest_the_closest_valid_name() -> None:
    raw = valid(debounce=2.0)
    raw["pipline"] = {}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("x.yaml"))
    assert (
        "image_watcher.debounce: unknown key (did you mean 'debounce_delay'?)"
        in caught.value.problems
    )
    assert "pipline: unknown key (did you mean 'pipeline'?)" in caught.value.problems


def test_missing_required_keys_and_sections() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"image_watcher": {"recursive": True}}, Path("x.yaml"))
    assert caught.value.problems == [
        "image_watcher.watch_path: required key is missing",
        "pipeline: required section is missing",
    ]


def test_a_section_that_is_not_a_mapping() -> None:
    raw = valid()
    raw["image_watcher"] = ["/mnt/seestar"]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("x.yaml"))
    assert caught.value.problems == [
        "image_watcher: expected a mapping of keys, got ['/mnt/seestar']"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        """
        image_watcher:
          watch_path: /mnt/seestar
          debounce_delay: abc
          observer: sometimes
          recursiv: true
        pipeline:
          command: []
        """,
        tmp_path,
    )
    assert len(problems) == 4
    message = str(ConfigError("config.yaml", problems))
    assert "4 problems" in message and "debounce_delay" in message and "recursiv" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    problems = problems_of(
        """
        image_watcher:
          watch_path: /mnt/seestar
          debounce_delay: [2.0
        pipeline:
          command: ["echo"]
        """,
        tmp_path,
    )
    assert len(problems) == 1
    assert problems[0].startswith("YAML syntax error: line ")


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "the file is empty"), ("- a\n- b\n", "expected a mapping of sections, got ['a', 'b']")],
)
def test_empty_or_non_mapping_documents(tmp_path: Path, text: str, message: str) -> None:
    assert problems_of(text, tmp_path) == [message]


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    problems = problems_of("image_watcher: !!python/object/apply:os.system ['true']\n", tmp_path)
    assert problems[0].startswith("YAML syntax error")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the file" in caught.value.problems[0]


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_config(path)


class TestFindingTheConfig:
    @pytest.fixture(autouse=True)
    def _isolated(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        monkeypatch.chdir(tmp_path)

    def test_explicit_option_wins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONFIG_ENV, "/from/env.yaml")
        assert find_config_file(Path("given.yaml")) == Path("given.yaml")

    def test_then_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONFIG_ENV, "/from/env.yaml")
        (Path.cwd() / "config.yaml").write_text("x: 1")
        assert find_config_file(None) == Path("/from/env.yaml")

    def test_then_the_current_folder(self, tmp_path: Path) -> None:
        (tmp_path / "config.yaml").write_text("x: 1")
        assert find_config_file(None) == tmp_path / "config.yaml"

    def test_then_the_user_config_folder(self, tmp_path: Path) -> None:
        user = tmp_path / "xdg" / "seestar-watch" / "config.yaml"
        user.parent.mkdir(parents=True)
        user.write_text("x: 1")
        assert find_config_file(None) == user

    def test_none_found_lists_every_place_it_looked(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            find_config_file(None)
        message = str(caught.value)
        assert "-c/--config" in message and CONFIG_ENV in message
        assert str(tmp_path / "config.yaml") in message
        assert str(tmp_path / "xdg" / "seestar-watch" / "config.yaml") in message


def test_example_is_plain_yaml() -> None:
    assert isinstance(yaml.safe_load(EXAMPLE.read_text()), dict)


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["image_watcher: {watch_path: /x, ignore: *i}", "pipeline: {command: [true]}"]
)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (BILLION_LAUGHS, "expands to more than 10,000 values"),
        ("x: " + "[" * 10_000 + "]" * 10_000, "nested more than 32 levels deep"),
        ("- item\n" * 1_000_000, "a config is a few KB"),
        ("pipeline: {command: [a]}\npipeline: {command: [b]}\n", "'pipeline' is given twice"),
        ("image_watcher:\n  watch_path: /a\n  watch_path: /b\n", "'watch_path' is given twice"),
    ],
)
def test_hostile_yaml_is_refused_in_one_short_line_and_quickly(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert time.monotonic() - started < 1.0
    message = str(caught.value)
    assert said in message
    assert len(message.splitlines()) == 1 and len(message) < 300


def test_error_messages_quote_values_cut_to_a_readable_length(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("image_watcher: {watch_path: /x, debounce_delay: [" + "1, " * 5000 + "1]}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = next(p for p in caught.value.problems if "debounce_delay" in p)
    assert line.endswith("...") and len(line) < 200


def test_a_few_anchors_and_aliases_are_still_fine(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "image_watcher: &w {watch_path: /x, ignore: &i [Stacked_*]}\n"
        "pipeline: {command: [echo, '{path}'], env: {A: '1'}}\n"
        "logging: {level: info}\n"
    )
    assert load_config(path).image_watcher.ignore == ("Stacked_*",)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("pipeline", "retries", 1030, "from 0 to 20 (the 20th retry already waits"),
        ("pipeline", "workers", 10**6, "from 1 to 64"),
        ("pipeline", "shutdown_grace", 1e308, "at most 604800 (a week)"),
        ("pipeline", "timeout", 1e10, "at most 604800 (a week)"),
        ("pipeline", "retry_delay", 1e10, "at most 604800 (a week)"),
        ("image_watcher", "rescan_interval", 1e10, "at most 604800 (a week)"),
        ("image_watcher", "poll_interval", 1e10, "at most 604800 (a week)"),
        ("image_watcher", "debounce_delay", 1e10, "at most 604800 (a week)"),
        ("image_watcher", "mount_retry", 1e10, "at most 604800 (a week)"),
        ("image_watcher", "smb_timeout", 1e10, "at most 600 (a call this long is a lost share)"),
        ("image_watcher", "max_frame_mb", 1e10, "at most 100000 (100 GB)"),
        ("archive", "min_free_mb", 1e10, "at most 1e+07 (10 TB)"),
        ("alerts", "stalled_after", 1e10, "at most 604800 (a week)"),
        ("alerts", "results_frames", 10**9, "from 1 to 10000"),
    ],
)
def test_every_number_has_an_upper_bound_with_its_reason(
    section: str, key: str, value: object, message: str
) -> None:
    raw: dict[str, object] = valid()
    raw.setdefault(section, {})[key] = value  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("x.yaml"))
    (problem,) = caught.value.problems
    assert problem.startswith(f"{section}.{key}: expected ") and message in problem


def test_the_longest_retry_wait_is_a_week_at_most() -> None:
    raw = valid()
    raw["pipeline"] = {"command": ["true"], "retries": 20, "retry_delay": 604800}
    pipeline = parse_config(raw, Path("x.yaml")).pipeline
    assert pipeline.longest_retry_delay == 604800 and pipeline.retry_wait(1) == 604800


def test_a_nul_in_any_string_is_refused_by_its_key() -> None:
    raw = {
        "image_watcher": {"watch_path": "/mnt/seestar\0/MyWorks", "ignore": ["ok", "x\0"]},
        "pipeline": {"command": ["echo", "{path}\0"], "env": {"A\0B": "1", "C": "x\0"}},
        "archive": {"path": "/archive\0"},
        "state": {"path": "/state\0"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("x.yaml"))
    keys = [problem.split(": ")[0] for problem in caught.value.problems]
    assert keys == [
        "image_watcher.watch_path", "image_watcher.ignore[1]", "pipeline.command[1]",
        "pipeline.env.A\\0B", "pipeline.env.C", "archive.path", "state.path",
    ]  # fmt: skip
    assert all("NUL character" in problem for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('pipeline:\n  command: ["true"]\n  retries: 1030', "pipeline.retries"),
        ('pipeline:\n  command: ["true"]\n  shutdown_grace: 1.0e+308', "shutdown_grace"),
        ('pipeline:\n  command: ["true"]\n  env: {A: "x\\0y"}', "NUL character"),
        ('pipeline:\n  command: ["tr\\0ue"]', "pipeline.command[0]: holds a NUL"),
    ],
)
def test_check_config_and_run_refuse_what_would_crash_run(
    tmp_path: Path, settings: str, message: str
) -> None:

    (tmp_path / "share").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"image_watcher:\n  watch_path: {tmp_path / 'share'}\n{settings}\n")
    for command in (["check-config"], ["run", "--once"]):
        done = run_cli(*command, "-c", str(config))
        assert done.returncode == 1, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
