"""A parsed YAML document made into a Config: every section checked, every problem found at
once, every relative path resolved from the config file's folder."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from seestar_watch.config.checks import INVALID, expected, quoted
from seestar_watch.config.sections import (
    REQUIRED_SECTIONS,
    SECTIONS,
    ArchiveConfig,
    Config,
    StateConfig,
    WatcherConfig,
    scope_name,
)
from seestar_watch.errors import ConfigError
from seestar_watch.sources.smburl import SmbUrl

Section = TypeVar("Section")


def _unknown_key(problems: list[str], key: str, name: str, valid: list[str]) -> None:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"
    problems.append(f"{key}: unknown key{hint}")


def _section(cls: type[Section], raw: Any, name: str, problems: list[str]) -> Section | None:
    if not isinstance(raw, Mapping):
        expected(problems, name, "a mapping of keys", raw)
        return None
    known = {f.name: f for f in fields(cls) if f.metadata.get("check")}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            _unknown_key(problems, f"{name}.{key}", str(key), list(known))
    values: dict[str, Any] = {}
    for key, spec in known.items():
        if key in raw:
            values[key] = spec.metadata["check"](raw[key], f"{name}.{key}", problems)
        elif spec.default is MISSING and spec.default_factory is MISSING:
            problems.append(f"{name}.{key}: required key is missing")
            values[key] = INVALID
    if any(value is INVALID for value in values.values()):
        return None
    return cls(**values)


def parse_config(raw: Any, source: Path) -> Config:
    """Validate an already-parsed YAML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        what = (
            "the file is empty"
            if raw is None
            else f"expected a mapping of sections, got {quoted(raw)}"
        )
        raise ConfigError(str(source), [what])
    problems += _nul_problems(raw, "")
    if problems:  # a NUL would crash the first path, command or variable that holds it
        raise ConfigError(str(source), problems)
    for name in raw:
        if name not in SECTIONS and name != "scope":
            _unknown_key(problems, str(name), str(name), [*SECTIONS, "scope"])
    scope = scope_name(raw["scope"], "scope", problems) if "scope" in raw else None
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name in raw:
            sections[name] = _section(cls, raw[name], name, problems)
        elif name in REQUIRED_SECTIONS:
            problems.append(f"{name}: required section is missing")
    if problems:
        raise ConfigError(str(source), problems)
    sections = {
        name: _resolved(section, source.absolute().parent) for name, section in sections.items()
    }
    problems += _combination_problems(sections)
    if problems:
        raise ConfigError(str(source), problems)
    return Config(source=source, scope=scope, **_scoped(sections, scope))


def _scoped(sections: dict[str, Any], scope: str | None) -> dict[str, Any]:
    """A named scope's default ledger and archive folders are its own."""
    if scope is None:
        return sections
    state = replace(sections.get("state") or StateConfig(), scope=scope)
    archive = replace(sections.get("archive") or ArchiveConfig(), scope=scope)
    return {**sections, "state": state, "archive": archive}


def _nul_problems(value: Any, key: str) -> list[str]:
    """Every string of the document (keys too) that holds a NUL character, by its key."""
    if isinstance(value, str):
        if "\0" not in value:
            return []
        return [f"{key}: holds a NUL character, which no path, command or setting can carry"]
    found = []
    if isinstance(value, Mapping):
        for name, item in value.items():
            where = str(name).replace("\0", "\\0")
            where = f"{key}.{where}" if key else where
            found += _nul_problems(name, where) + _nul_problems(item, where)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += _nul_problems(item, f"{key}[{n}]")
    return found


def _combination_problems(sections: dict[str, Any]) -> list[str]:
    """Keys that are valid alone but not together."""
    pipeline = sections["pipeline"]
    if pipeline.executor == "celery" and pipeline.broker is None:
        return [
            "pipeline.broker: required with executor: celery (the Redis the workers take"
            " frames from, e.g. redis://127.0.0.1:6379/0)"
        ]
    watcher = sections["image_watcher"]
    if isinstance(watcher.watch_path, SmbUrl):
        return _smb_problems(watcher, sections.get("archive") or ArchiveConfig())
    if watcher.mount_point is not None:
        return _mount_point_problems(watcher)
    return []


def _resolved(section: Section, base: Path) -> Section:
    """Every path made absolute once, here: a relative one is taken from the config file's
    folder, so `run`, `status` and the service find the same ledger wherever they start."""
    changes = {
        spec.name: Path(os.path.normpath(base / value))
        for spec in fields(section)  # type: ignore[arg-type]
        if isinstance(value := getattr(section, spec.name), Path)
    }
    return replace(section, **changes)  # type: ignore[type-var]


def _smb_problems(watcher: WatcherConfig, archive: ArchiveConfig) -> list[str]:
    """What cannot go with an smb:// watch_path, and why."""
    problems = []
    if watcher.mount_point is not None:
        problems.append(
            "image_watcher.mount_point: not used with an smb:// watch_path (seestar-watch"
            " connects to the share itself, no mount involved): remove it"
        )
    if watcher.observer == "native":
        problems.append(
            "image_watcher.observer: native needs a local folder; with smb:// use auto (the"
            " server's change notifications, and listings) or polling (listings only)"
        )
    if not archive.enabled:
        problems.append(
            "archive.enabled: false cannot go with an smb:// watch_path: the pipeline needs a"
            " local file, so with smb:// it always gets the archived copy"
        )
    return problems


def _mount_point_problems(watcher: WatcherConfig) -> list[str]:
    """watch_path must lie inside mount_point, or an unmounted share goes unnoticed."""
    assert watcher.mount_point is not None
    point, watched = str(watcher.mount_point), str(watcher.watch_path)
    if os.path.commonpath([point, watched]) == point:
        return []
    return [
        f"image_watcher.watch_path: {watched} is not inside image_watcher.mount_point ({point});"
        " the watched folder must be on the mounted share (e.g. mount_point: /mnt/seestar,"
        " watch_path: /mnt/seestar/MyWorks)"
    ]
