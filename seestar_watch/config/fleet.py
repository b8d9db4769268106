"""Several telescopes on one host: what two of their configs must never share, and the
`fleet:` file that names them all for one dashboard.

Each telescope's daemon needs a ledger of its own (the instance lock would stop the
second daemon, or two would claim each other's frames), an archive folder of its own
(retention would remove the other's copies) and a dashboard port of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seestar_watch.config.checks import quoted
from seestar_watch.config.sections import Config, Listen, listen_address
from seestar_watch.config.yamlfile import load_config, read_document
from seestar_watch.errors import ConfigError

MAX_FLEET = 32  # telescopes one page shows
# where one page for several listens by default: beside their own pages (8765, 8766, ...)
FLEET_LISTEN: Listen = ("127.0.0.1", 8760)


@dataclass(frozen=True)
class Claims:
    """What one telescope's daemon holds for itself on this host."""

    name: str  # how the problems name it: the instance, or its config file
    ledger: Path
    archive: Path | None
    port: int | None  # the dashboard's (and /metrics'); None: off, or any free port

    @classmethod
    def of(cls, name: str, config: Config) -> Claims:
        listen = config.dashboard.listen
        return cls(
            name,
            Path(os.path.abspath(config.state.ledger)),
            Path(os.path.abspath(config.archive.folder)) if config.archive.enabled else None,
            listen[1] if listen is not None and listen[1] != 0 else None,
        )


def clashes(claims: list[Claims]) -> list[str]:
    """Every pair of telescopes that share a ledger, an archive folder or a port, in words."""
    problems = []
    for n, first in enumerate(claims):
        for second in claims[n + 1 :]:
            pair = f"{first.name} and {second.name}"
            if first.ledger == second.ledger:
                problems.append(
                    f"{pair} share the ledger {first.ledger}: give each its own state.path"
                    " (or its own `scope:` name, whose default ledger is its own)"
                )
            if _overlap(first.archive, second.archive):
                problems.append(
                    f"{pair} share the archive folder {first.archive}"
                    + ("" if first.archive == second.archive else f" / {second.archive}")
                    + ": retention in one would remove the other's copies; give each its own"
                    " archive.path (or its own `scope:` name)"
                )
            if first.port is not None and first.port == second.port:
                problems.append(
                    f"{pair} both put their dashboard on port {first.port}: give each its own"
                    " dashboard.listen (e.g. 127.0.0.1:8765 and 127.0.0.1:8766)"
                )
    return problems


def _overlap(first: Path | None, second: Path | None) -> bool:
    """One folder is the other, or holds it."""
    if first is None or second is None:
        return False
    return first == second or first in second.parents or second in first.parents


@dataclass(frozen=True)
class Fleet:
    """A `fleet:` file: the configs of the telescopes one dashboard shows."""

    source: Path
    configs: tuple[Path, ...]
    listen: Listen | None  # its dashboard.listen, if it gives one


def load_fleet(path: Path) -> Fleet | None:
    """The fleet file at `path`: `fleet: [north.yaml, south.yaml]` (relative to the file's
    folder) and, optionally, `dashboard: {listen: HOST:PORT}`; ConfigError with every
    problem at once; None when `path` is no fleet file (a telescope's config, say)."""
    try:
        raw: Any = read_document(path)
    except ConfigError:
        return None  # loading it as a config says why, in the usual words
    if not isinstance(raw, dict) or "fleet" not in raw:
        return None
    problems: list[str] = []
    for key in raw:
        if key not in ("fleet", "dashboard"):
            problems.append(
                f"{key}: unknown key in a fleet file (it holds `fleet:` and `dashboard:`;"
                " each telescope's settings stay in its own config)"
            )
    listed = raw.get("fleet")
    if not isinstance(listed, list) or not listed or not all(isinstance(p, str) for p in listed):
        problems.append(f"fleet: expected a list of config files, got {quoted(listed)}")
        listed = []
    elif len(listed) > MAX_FLEET:
        problems.append(f"fleet: {len(listed)} configs; one page shows at most {MAX_FLEET}")
    listen = None
    dashboard = raw.get("dashboard", {})
    if not isinstance(dashboard, dict) or set(dashboard) - {"listen"}:
        problems.append("dashboard: a fleet file takes only dashboard.listen")
    elif "listen" in dashboard:
        listen = listen_address(dashboard["listen"], "dashboard.listen", problems)
    if problems:
        raise ConfigError(str(path), problems)
    base = path.absolute().parent
    configs = tuple(Path(os.path.normpath(base / os.path.expanduser(p))) for p in listed)
    return Fleet(path, configs, listen)


def load_configs(paths: list[Path]) -> list[Config]:
    """Each config of several, every file's problems at once: one ConfigError for all."""
    configs, problems = [], []
    for path in paths:
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            problems += [f"{exc.source}: {problem}" for problem in exc.problems]
    if problems:
        raise ConfigError("the fleet", problems)
    return configs
