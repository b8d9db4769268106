"""Running the real daemon: config files, a subprocess with JSON logs, and what the pipeline saw.

The command line is run in two ways. `run`, `process`, `dashboard`, `demo` and `check-mount`
are processes of their own (`run_cli`): their signals, the subreaper, the umask, a server, a
daemon or a forked child (check-mount's bounded look) are the point. Every other command
is called in this process with click's runner (`invoke`), logging set back as it was
afterwards: the same command, the same error boundary and exit codes, without starting an
interpreter each time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml
from click.testing import CliRunner

from tests.conftest import wait_for

RECORDER = Path(__file__).parent / "recorder_pipeline.py"


class Scope:
    """A folder standing in for the share, a config pointing at it, and the recorder pipeline."""

    def __init__(self, root: Path, **overrides: Any) -> None:
        self.root = root
        self.share = root / "share" / "MyWorks"
        self.share.mkdir(parents=True, exist_ok=True)
        self.records = root / "records"
        self.records.mkdir(exist_ok=True)
        self.archive = root / "archive"
        self.ledger = root / "state" / "ledger.sqlite3"
        self.config_path = root / "config.yaml"
        self.settings: dict[str, Any] = {
            "image_watcher": {
                "watch_path": str(self.share),
                "debounce_delay": 0.3,
                "recursive": True,
                "rescan_interval": 1,
                "poll_interval": 0.2,
            },
            "pipeline": {
                "command": [sys.executable, str(RECORDER), "{path}"],
                "retry_delay": 0,
                "timeout": 30,
                "shutdown_grace": 5,
                "env": {"RECORD_DIR": str(self.records), "BEHAVIOUR": "ok"},
            },
            "archive": {"path": str(self.archive)},
            "state": {"path": str(self.ledger)},
            "logging": {"format": "json", "level": "debug"},
            "dashboard": {"listen": False},  # tests that serve it choose a free port
        }
        self.update(**overrides)

    def update(self, **sections: dict[str, Any]) -> None:
        for name, values in sections.items():
            self.settings.setdefault(name, {}).update(values)
        self.config_path.write_text(yaml.safe_dump(self.settings))

    def behave(self, behaviour: str) -> None:
        self.update(pipeline={"env": {**self.settings["pipeline"]["env"], "BEHAVIOUR": behaviour}})

    def runs(self) -> list[dict[str, Any]]:
        path = self.records / "runs.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        # a command may be writing its line right now: only whole lines are runs yet
        complete = text[: text.rfind("\n") + 1]
        runs = [json.loads(line) for line in complete.splitlines()]
        for run in runs:
            run["argv"] = [os.fsdecode(bytes.fromhex(a)) for a in run["argv"]]
        return runs

    def run_sources(self) -> list[str]:
        return [run["source"] for run in self.runs()]

    def cli(self, *args: str, timeout: float = 60) -> Ran:
        """A command with this scope's config: a process for those that need one, else in
        this process (see the module's docstring)."""
        if args and args[0] in PROCESS_COMMANDS:
            return run_cli(*args, "-c", str(self.config_path), timeout=timeout)
        return invoke(*args, "-c", str(self.config_path))

    def start(self, *args: str) -> DaemonProcess:
        return DaemonProcess(self, list(args))


def started_daemon(
    scope: Scope, started: list[DaemonProcess], *args: str, until: str
) -> DaemonProcess:
    """Start `seestar-watch run`, remember it for cleanup, and wait for the `until` event.

    Wait for "watcher.started" before writing frames: a first start's baseline is taken
    once the share is there, and a frame written before that is recorded as skipped.
    """
    daemon = scope.start(*args)
    started.append(daemon)
    daemon.wait_for_event(until)
    return daemon


class DaemonProcess:
    """`seestar-watch run` in a subprocess; its JSON log lines are read from a file."""

    def __init__(self, scope: Scope, args: list[str]) -> None:
        self.log_path = scope.root / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seestar_watch", "run", "-c", str(scope.config_path), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"event": "<not json>", "line": line})
        return entries

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs() if entry.get("event") == name]

    def wait_for_event(
        self, name: str, count: int = 1, timeout: float = 20
    ) -> list[dict[str, Any]]:
        def seen() -> list[dict[str, Any]] | None:
            if self.process.poll() is not None and len(self.events(name)) < count:
                raise AssertionError(f"daemon exited {self.process.returncode}: {self.text()}")
            found = self.events(name)
            return found if len(found) >= count else None

        return wait_for(seen, timeout)  # type: ignore[no-any-return]

    def wait_for_next(self, name: str, more: int = 1, timeout: float = 20) -> None:
        """Wait for `more` `name` events after those already logged (a rescan after this)."""
        self.wait_for_event(name, count=len(self.events(name)) + more, timeout=timeout)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def close(self) -> None:
        """Whatever state it is in: killed if still running, its log closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


PROCESS_COMMANDS = {"run", "process", "dashboard", "demo", "check-mount", "worker"}


@dataclass
class Ran:
    """What a command did, in-process or not: as subprocess.CompletedProcess says it."""

    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
    """The command line called in this process, with `env` added to ours."""
    from seestar_watch.cli import cli

    with _logging_kept(), contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(cli, list(args), env=env, prog_name="seestar-watch")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # the error boundary lets nothing out: a bug in the test
    return Ran(result.exit_code, result.stdout, result.stderr)


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """A command sets up logging for its run (handlers on the captured stderr): set it back."""
    root, ours = logging.getLogger(), logging.getLogger("seestar_watch")
    handlers, level, our_level = root.handlers[:], root.level, ours.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        ours.setLevel(our_level)
        structlog.configure(**config)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own, with `env` added to ours (the daemon aside,
    which DaemonProcess follows)."""
    return subprocess.run(
        [sys.executable, "-m", "seestar_watch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
