"""The config's sections: frozen dataclasses whose fields carry their own check and default,
and the checks that belong to one section only."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from seestar_watch.config.checks import (
    INVALID,
    WEEK,
    ObserverKind,
    boolean,
    choice,
    expected,
    integer,
    number,
    optional,
    optional_path,
    pipeline_command,
    quoted,
    setting,
    string_list,
    string_map,
    text,
    watch_location,
)
from seestar_watch.sources.smburl import SmbUrl

Executor = Literal["local", "celery"]


def redis_url(value: Any, key: str, problems: list[str]) -> Any:
    """The broker: redis://[:password@]host[:port][/db] (rediss:// with TLS)."""
    if not isinstance(value, str) or not re.fullmatch(r"rediss?://[^\s/]+(/\d{1,2})?/?", value):
        return expected(problems, key, "a redis:// address, e.g. redis://127.0.0.1:6379/0", value)
    return value


def path_mapping(value: Any, key: str, problems: list[str]) -> Any:
    """{daemon's folder: this worker's folder}, both absolute."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k.startswith("/") and v.startswith("/")
        for k, v in value.items()
    ):
        return expected(
            problems, key, "a mapping of absolute folders, e.g. {/srv/archive: /mnt/archive}", value
        )
    return {k.rstrip("/") or "/": v.rstrip("/") or "/" for k, v in value.items()}


@dataclass(frozen=True)
class WatcherConfig:
    watch_path: Path | SmbUrl = setting(watch_location)
    enabled: bool = setting(boolean, True)
    debounce_delay: float = setting(number(0), 2.0)
    # The Seestar writes every sub-frame into MyWorks/<target>_sub/: watching only the
    # top folder would never see one, so the default follows the telescope.
    recursive: bool = setting(boolean, True)
    observer: ObserverKind = setting(choice(get_args(ObserverKind)), "auto")
    poll_interval: float = setting(number(0, above=True), 2.0)
    rescan_interval: float = setting(number(0), 60.0)
    # the telescope's own stacks are not sub-frames (a 3-D cube quicklook cannot measure)
    ignore: tuple[str, ...] = setting(string_list, ("Stacked_*", "DSO_Stacked_*"))
    mount_point: Path | None = setting(optional_path, None)
    mount_retry: float = setting(number(0, above=True), 10.0)
    incomplete_timeout: float = setting(number(0, above=True), 300.0)
    smb_timeout: float = setting(
        number(0, above=True, at_most=(600, "a call this long is a lost share")), 10.0
    )
    # A sub is 4 MB (S50) or 17 MB (S30 Pro), an on-board stack up to ~50 MB; a guest's
    # sparse file can claim gigabytes in a few KB of the telescope's disk.
    max_frame_mb: float = setting(number(0, above=True, at_most=(100_000, "100 GB")), 200.0)


@dataclass(frozen=True)
class PipelineConfig:
    command: tuple[str, ...] = setting(pipeline_command)
    timeout: float = setting(number(0, above=True), 600.0)
    retries: int = setting(integer(0, 20, "the 20th retry already waits retry_delay x 2^19"), 2)
    retry_delay: float = setting(number(0), 30.0)
    workers: int = setting(integer(1, 64, "one thread and one command each"), 1)
    env: dict[str, str] = setting(string_map, factory=dict)
    shutdown_grace: float = setting(number(0), 30.0)
    # where the command runs: here (local), or on a pool of `seestar-watch worker`s that a
    # Redis broker feeds (celery); see README "Scaling out"
    executor: Executor = setting(choice(get_args(Executor)), "local")
    broker: str | None = setting(optional(redis_url), None)
    # frames up to this size travel in the task; larger ones are read from shared storage
    # (the archive on NFS/SMB), at the path `path_map` turns the daemon's path into
    carry_mb: float = setting(number(0, at_most=(256, "a task of 256 MB")), 32.0)
    path_map: dict[str, str] = setting(path_mapping, factory=dict)

    def retry_wait(self, attempt: int) -> float:
        """The wait before the retry that follows `attempt`: retry_delay, doubled for each
        attempt before it, at most a week."""
        return min(float(self.retry_delay * 2 ** max(0, attempt - 1)), WEEK)

    @property
    def longest_retry_delay(self) -> float:
        """The wait before the last retry."""
        return self.retry_wait(self.retries)


@dataclass(frozen=True)
class ArchiveConfig:
    enabled: bool = setting(boolean, True)
    path: Path | None = setting(optional_path, None)  # None: the user data folder
    # below this much free space (after the copy) frames wait instead of being copied:
    # the archive's disk is often the ledger's, and the system's, too
    min_free_mb: float = setting(number(0, at_most=(10_000_000, "10 TB")), 500.0)
    # Retention, off by default: the copies of finished frames (done, skipped, rejected)
    # beyond this size, or older than this, are removed, the oldest first (4 MB a sub is
    # ~10 GB a night); a copy still needed is never removed.
    max_gb: float | None = setting(
        optional(number(0, above=True, at_most=(100_000, "100 TB"))), None
    )
    keep_days: float | None = setting(
        optional(number(0, above=True, at_most=(3650, "ten years"))), None
    )

    # the config's `scope:` (not a key of this section): a scope's default folder is its own
    scope: str | None = field(default=None, metadata={"check": None})

    @property
    def folder(self) -> Path:
        if self.path is not None:
            return self.path
        from platformdirs import user_data_path

        return user_data_path("seestar-watch") / (self.scope or "") / "archive"


@dataclass(frozen=True)
class StateConfig:
    path: Path | None = setting(optional_path, None)  # None: the user state folder
    process_existing: bool = setting(boolean, False)
    scope: str | None = field(default=None, metadata={"check": None})  # as ArchiveConfig's

    @property
    def ledger(self) -> Path:
        if self.path is not None:
            return self.path
        from platformdirs import user_state_path

        return user_state_path("seestar-watch") / (self.scope or "") / "ledger.sqlite3"


Listen = tuple[str, int]  # (host, port)
DEFAULT_LISTEN: Listen = ("127.0.0.1", 8765)


def parse_listen(text: str) -> Listen:
    """`HOST:PORT` (`[::1]:8765` for IPv6; port 0: any free port); ValueError says why not."""
    host, colon, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8765 (or 0.0.0.0:8765 for the LAN)")
    return host, int(port)


def listen_address(value: Any, key: str, problems: list[str]) -> Any:
    """Where the dashboard listens; false or null (YAML's `off` is false) turns it off."""
    if value is None or value is False or (isinstance(value, str) and value.lower() == "off"):
        return None  # `off` unquoted is YAML's false; "off" quoted means the same
    if not isinstance(value, str):
        return expected(problems, key, "HOST:PORT, or off", value)
    try:
        return parse_listen(value)
    except ValueError as exc:
        problems.append(f"{key}: {exc}, got {quoted(value)}")
        return INVALID


@dataclass(frozen=True)
class DashboardConfig:
    # On, at localhost: it shows nothing beyond this machine, costs no measurable CPU while
    # no one looks, and a first night's user finds it without reading (see the README).
    listen: Listen | None = setting(listen_address, DEFAULT_LISTEN)


@dataclass(frozen=True)
class ResultLimit:
    """An alert when a result field goes below `below` or above `above`."""

    below: float | None = None
    above: float | None = None

    def crossed(self, value: float) -> bool:
        return (self.below is not None and value < self.below) or (
            self.above is not None and value > self.above
        )

    def __str__(self) -> str:
        parts = [f"below {self.below:g}"] if self.below is not None else []
        parts += [f"above {self.above:g}"] if self.above is not None else []
        return " or ".join(parts)


def finite(value: Any, key: str, problems: list[str]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return expected(problems, key, "a number", value)
    return float(value)


def result_limits(value: Any, key: str, problems: list[str]) -> Any:
    """`{stars: {below: 20}, fwhm_arcsec: {above: 20}}`: a result field and its limits."""
    if not isinstance(value, Mapping):
        return expected(problems, key, "a mapping of result field: {below: N, above: N}", value)
    limits, ok = {}, True
    for name, limit in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not name:
            return expected(problems, key, "result field names", name)
        if not isinstance(limit, Mapping) or not limit or set(limit) - {"below", "above"}:
            expected(problems, where, "{below: N} and/or {above: N}", limit)
            ok = False
            continue
        numbers = {
            edge: number(-math.inf, at_most=None)(limit[edge], f"{where}.{edge}", problems)
            for edge in limit
        }
        if any(n is INVALID for n in numbers.values()):
            ok = False
            continue
        limits[name] = ResultLimit(**numbers)
    return limits if ok else INVALID


def clock_time(value: Any, key: str, problems: list[str]) -> Any:
    """A local time of day, "HH:MM" (24 h), or null."""
    if value is None:
        return None
    hours, colon, minutes = str(value).partition(":")
    if (
        not isinstance(value, str)
        or not colon
        or not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2)
        or int(hours) > 23
        or int(minutes) > 59
    ):
        return expected(problems, key, 'a local time "HH:MM" (e.g. "07:30"), or null', value)
    return f"{int(hours):02d}:{minutes}"


@dataclass(frozen=True)
class AlertsConfig:
    urls: tuple[str, ...] = setting(string_list, ())  # apprise URLs; checked by preflight
    share_lost_after: float = setting(number(0), 300.0)
    # the share away this long after a night's frames: the night is over, its summary goes
    night_over_after: float = setting(number(0), 3600.0)
    min_interval: float = setting(number(0), 600.0)
    stalled_after: float = setting(number(0, above=True), 900.0)
    results: dict[str, ResultLimit] = setting(result_limits, factory=dict)
    results_frames: int = setting(integer(1, 10_000, "a night holds fewer frames"), 3)
    summary_at: str | None = setting(clock_time, None)


# -- photometry: the stage's targets, comparison stars, sensor and solver ----------------


@dataclass(frozen=True)
class Target:
    """A star to measure: its name, position (degrees) and, for a phase, period and epoch."""

    name: str
    ra: float
    dec: float
    period: float | None = None  # days
    epoch: float | None = None  # a JD of maximum (or of minimum, for an eclipsing binary)


_SEXAGESIMAL = re.compile(
    r"\s*(?P<ra>\d{1,2}[: ]\d{1,2}[: ]\d{1,2}(?:\.\d*)?)\s*[, ]\s*"
    r"(?P<dec>[+-]?\d{1,2}[: ]\d{1,2}[: ]\d{1,2}(?:\.\d*)?)\s*"
)


def parse_position(text: str) -> tuple[float, float]:
    """ "192.810 40.776" (degrees) or "12:51:14.4 +40:46:33" (hours, degrees) -> (ra, dec)
    in degrees; ValueError says what is accepted."""
    found = _SEXAGESIMAL.fullmatch(text)
    if found:
        h, m, sec = (float(part) for part in re.split("[: ]", found["ra"]))
        sign = -1.0 if found["dec"].strip().startswith("-") else 1.0
        d, dm, ds = (abs(float(part)) for part in re.split("[: ]", found["dec"].lstrip("+-")))
        ra, dec = 15 * (h + m / 60 + sec / 3600), sign * (d + dm / 60 + ds / 3600)
        if h >= 24 or m >= 60 or sec >= 60 or dm >= 60 or ds >= 60:
            raise ValueError(f"not a position: {text!r}")
    else:
        parts = text.replace(",", " ").split()
        try:
            ra, dec = (float(part) for part in parts)
        except ValueError:
            raise ValueError(
                f'not a position: {text!r}; give "RA DEC" in degrees ("192.810 40.776")'
                ' or sexagesimal ("12:51:14.4 +40:46:33")'
            ) from None
    if not (0 <= ra < 360 and -90 <= dec <= 90) or not math.isfinite(ra + dec):
        raise ValueError(f"not a position on the sky: {text!r}")
    return ra, dec


def targets(value: Any, key: str, problems: list[str]) -> Any:
    """`[{name: "RR Lyr", ra: "19:25:27.9", dec: "+42:47:04", period: 0.5668, epoch: ...}]`"""
    if not isinstance(value, list):
        return expected(problems, key, "a list of {name, ra, dec[, period, epoch]}", value)
    found, ok = [], True
    for n, raw in enumerate(value):
        where = f"{key}[{n}]"
        if (
            not isinstance(raw, Mapping)
            or not {"name", "ra", "dec"} <= set(raw)
            or set(raw) - {"name", "ra", "dec", "period", "epoch"}
        ):
            expected(problems, where, "{name, ra, dec[, period, epoch]}", raw)
            ok = False
            continue
        try:
            ra, dec = parse_position(f"{raw['ra']} {raw['dec']}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            ok = False
            continue
        extra = {
            name: number(0, above=True, at_most=None)(raw[name], f"{where}.{name}", problems)
            for name in ("period", "epoch")
            if raw.get(name) is not None
        }
        if any(v is INVALID for v in extra.values()) or not str(raw["name"]).strip():
            ok = False
            continue
        found.append(Target(str(raw["name"]).strip(), ra, dec, **extra))
    return tuple(found) if ok else INVALID


def site(value: Any, key: str, problems: list[str]) -> Any:
    """`{lat: 44.63, lon: 4.38, elevation: 120}`: where the telescope stands (degrees, m)."""
    if value is None:
        return None
    if (
        not isinstance(value, Mapping)
        or not {"lat", "lon"} <= set(value)
        or set(value) - {"lat", "lon", "elevation"}
    ):
        return expected(problems, key, "{lat: deg, lon: deg (east +)[, elevation: m]}", value)
    lat = number(-90, at_most=(90, "the pole"))(value["lat"], f"{key}.lat", problems)
    lon = number(-180, at_most=(360, "once round"))(value["lon"], f"{key}.lon", problems)
    height = number(-500, at_most=(9000, "higher than any mountain"))(
        value.get("elevation", 0), f"{key}.elevation", problems
    )
    return INVALID if INVALID in (lat, lon, height) else (lat, lon, height)


Solver = Literal["auto", "astrometry", "astap"]


@dataclass(frozen=True)
class PhotometryConfig:
    targets: tuple[Target, ...] = setting(targets, ())
    target: str | None = setting(optional(text), None)  # a name of targets, or "RA DEC"
    comps: Path | None = setting(optional_path, None)  # an AAVSO VSP JSON or CSV file
    # the aperture radius; null: from the field's median FWHM (recorded with each result)
    aperture_arcsec: float | None = setting(
        optional(number(0, above=True, at_most=(300, "five arcminutes"))), None
    )
    # e-/ADU: scales the photon part of the errors only (see the README to measure it)
    gain: float = setting(number(0, above=True, at_most=(1000, "no sensor")), 1.0)
    adc_max: float = setting(number(1, at_most=(1e9, "a 30-bit ADC")), 65535.0)
    saturation: float = setting(number(0, above=True, at_most=(1, "the ADC maximum")), 0.9)
    solver: Solver = setting(choice(get_args(Solver)), "auto")
    solve_timeout: float = setting(number(0, above=True, at_most=(600, "ten minutes")), 30.0)
    index_folder: Path | None = setting(optional_path, None)  # astrometry.net's index files
    astap_database: Path | None = setting(optional_path, None)  # ASTAP's star database
    site: tuple[float, float, float] | None = setting(site, None)  # else SITELAT/SITELONG
    obscode: str | None = setting(optional(text), None)  # the AAVSO observer code, for reports


LogFormat = Literal["auto", "lines", "console", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = setting(choice(get_args(LogFormat)), "auto")
    level: LogLevel = setting(choice(get_args(LogLevel)), "info")


@dataclass(frozen=True)
class Config:
    source: Path
    image_watcher: WatcherConfig
    pipeline: PipelineConfig
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    state: StateConfig = field(default_factory=StateConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    # this telescope's name among several on one host (the dashboard, /metrics' `scope`
    # label, and its own default ledger and archive folders); None: the only one
    scope: str | None = None

    @property
    def scope_name(self) -> str:
        """The name the fleet's page and /metrics give this telescope: `scope:`, or the
        config file's name without its suffix."""
        return self.scope or scope_label(self.source.stem)

    @property
    def folder(self) -> Path:
        """The config file's folder: relative paths in the config, and the command, start here."""
        return self.source.absolute().parent


SCOPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def scope_name(value: Any, key: str, problems: list[str]) -> Any:
    """A scope's name: it becomes a folder, a URL path and a Prometheus label value."""
    if not isinstance(value, str) or not SCOPE_NAME.fullmatch(value):
        return expected(
            problems, key, "a name of letters, digits, '.', '_' or '-' (at most 40)", value
        )
    return value


def scope_label(text: str) -> str:
    """`text` made into a scope's name (a config file called `north 2.yaml` is `north-2`)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")[:40]
    return cleaned or "scope"


SECTIONS: dict[str, type[Any]] = {
    "image_watcher": WatcherConfig,
    "pipeline": PipelineConfig,
    "archive": ArchiveConfig,
    "state": StateConfig,
    "logging": LoggingConfig,
    "dashboard": DashboardConfig,
    "alerts": AlertsConfig,
    "photometry": PhotometryConfig,
}
REQUIRED_SECTIONS = ("image_watcher", "pipeline")
