"""What must hold before frames can be run: checked by `check-config`, `run`, `process`
and `service install` alike, so a daemon never starts only to fail every frame.

Nothing here creates or writes anything: a folder that does not exist yet is fine
when its nearest existing parent can be written (it is created at start).
"""

from __future__ import annotations

import os
from pathlib import Path

from seestar_watch.config import Config
from seestar_watch.errors import ConfigError
from seestar_watch.pipeline import command_problem
from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight

WATCH_PATH_TIMEOUT = 2.0  # a hung share must not hold check-config or run's start


def problems(config: Config) -> list[str]:
    """Every reason the daemon could not run frames with this config, one line each."""
    found = []
    # with executor: celery the command runs on the workers, which check it themselves
    problem = None if config.pipeline.executor == "celery" else command_problem_of(config)
    if problem:
        found.append(problem)
    if isinstance(config.image_watcher.watch_path, Path):  # an smb:// URL: check-mount says
        found += _watch_path_problems(config.image_watcher.watch_path)
    ledger = config.state.ledger
    if ledger.is_dir():
        found.append(
            f"state.path: {ledger} is a folder; give the ledger file's path,"
            f" e.g. {ledger / 'ledger.sqlite3'}"
        )
    else:
        found += _unwritable("state.path", ledger.parent, "the ledger")
    if config.archive.enabled:
        found += _unwritable("archive.path", config.archive.folder, "the archive")
    if config.alerts.urls:  # apprise knows which schemes and fields it supports
        from seestar_watch.alertsender import url_problems

        found += url_problems(config.alerts.urls)
    return found


def command_problem_of(config: Config) -> str | None:
    """Why pipeline.command cannot start on this machine, in one line, or None."""
    problem = command_problem(config.pipeline.command, config.folder)
    return None if problem is None else f"pipeline.command: {problem}"


def readable_secrets(config: Config) -> str | None:
    """A warning when the config holds secrets (alert URLs, an smb:// password) and others
    may read it."""
    watch_path = config.image_watcher.watch_path
    secrets = [
        *(["alerts.urls (tokens and passwords)"] if config.alerts.urls else []),
        *(
            ["the password in image_watcher.watch_path"]
            if getattr(watch_path, "password", "")
            else []
        ),
    ]
    if not secrets:
        return None
    try:
        mode = config.source.stat().st_mode
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{config.source} holds {' and '.join(secrets)} and other users may read it:"
        f" chmod 600 {config.source}"
    )


def require(config: Config) -> None:
    """Raise the ConfigError that check-config would print, if anything is wrong."""
    found = problems(config)
    if found:
        raise ConfigError(str(config.source), found)


def _watch_path_problems(watch_path: Path) -> list[str]:
    """A file is not a folder to watch; a missing or hung share is not a config problem."""
    try:
        is_file = SingleFlight("seestar-watch-preflight").call(
            watch_path.is_file, WATCH_PATH_TIMEOUT
        )
    except (ProbeTimeout, OSError):
        return []
    if not is_file:
        return []
    return [
        f"image_watcher.watch_path: {watch_path} is a file, not a folder; watch the folder"
        " that holds the frames (the share's MyWorks/)"
    ]


def _unwritable(key: str, folder: Path, what: str) -> list[str]:
    """Why `folder` cannot be created or written by this user, or nothing."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return [f"{key}: cannot create {folder}: {existing} is not a folder"]
    if os.access(existing, os.W_OK | os.X_OK):
        return []
    verb = "write to" if existing == folder else "create"
    return [
        f"{key}: cannot {verb} {folder} ({_why_unwritable(existing)}); set {key} to a folder"
        f" on a writable local disk for {what}, or fix the permissions of {existing}"
    ]


def _why_unwritable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except OSError:
        pass
    return f"no permission to write in {folder}"
