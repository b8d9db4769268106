"""The config file: found, parsed with yaml.safe_load, and validated all at once.

Every problem is reported with its key path and what was expected, so one run of
`check-config` shows everything that needs fixing. The sections are frozen
dataclasses whose fields carry their own check; a key that is not a field is an
error with the closest valid name suggested.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml

from seestar_watch.errors import ConfigError

ObserverKind = Literal["auto", "native", "polling"]
CONFIG_ENV = "SEESTAR_WATCH_CONFIG"
CONFIG_NAME = "config.yaml"


class _Invalid:
    """Marks a value that failed its check (the problem is already recorded)."""


INVALID = _Invalid()
Check = Callable[[Any, str, list[str]], Any]


def _expected(problems: list[str], key: str, what: str, value: Any) -> _Invalid:
    problems.append(f"{key}: expected {what}, got {_shown(value)}")
    return INVALID


# Upper bounds, each with the reason a larger value is a mistake: a wait longer than this
# is never meant, and a value past threading.TIMEOUT_MAX (about 292 years) crashes a wait.
WEEK = 7 * 86400.0
SECONDS = (WEEK, "a week")


def number(
    minimum: float, *, above: bool = False, at_most: tuple[float, str] | None = SECONDS
) -> Check:
    """A real number >= minimum (or > minimum when `above`), and at most `at_most`
    (a bound and its reason; seconds default to a week)."""
    what = f"a number {'>' if above else '>='} {minimum:g}"
    if at_most is not None:
        what += f" and at most {at_most[0]:g} ({at_most[1]})"

    def check(value: Any, key: str, problems: list[str]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _expected(problems, key, what, value)
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            return _expected(problems, key, what, value)
        if at_most is not None and value > at_most[0]:
            return _expected(problems, key, what, value)
        return float(value)

    return check


def boolean(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, bool):
        return _expected(problems, key, "true or false", value)
    return value


def choice(options: tuple[str, ...]) -> Check:
    """One of `options`, in any case (`INFO` is `info`)."""

    def check(value: Any, key: str, problems: list[str]) -> Any:
        if not isinstance(value, str) or value.lower() not in options:
            return _expected(problems, key, "one of " + " | ".join(options), value)
        return value.lower()

    return check


def folder_path(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value.strip():
        return _expected(problems, key, "a folder path", value)
    return Path(os.path.expanduser(value))


@dataclass(frozen=True)
class SmbUrl:
    """`smb://[user[:password]@]host[:port]/<share>/<folder>...`, the share's names as they are.

    Shown (str, logs, `{source}`) without the password and without percent-encoding, so a
    frame's URL is one exact argument: smb://seestar.local/EMMC Images/MyWorks/M 94_sub/x.fit
    """

    host: str
    share: str
    folder: tuple[str, ...] = ()
    port: int = 445
    username: str = "guest"
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.url_of("")

    def url_of(self, relpath: str) -> str:
        """The URL of `relpath` (a path below the folder, "/"-separated); "" for the folder."""
        user = "" if self.username == "guest" else f"{self.username}@"
        port = "" if self.port == 445 else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        parts = [self.share, *self.folder, *(p for p in relpath.split("/") if p)]
        return f"smb://{user}{host}{port}/" + "/".join(parts)


SMB_SCHEME = "smb://"


def parse_smb_url(text: str) -> SmbUrl:
    """An SmbUrl; ValueError saying what is wrong with `text`."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(text)
    try:
        port = parts.port or 445
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("no host (smb://seestar.local/EMMC Images/MyWorks)")
    names = [unquote(name) for name in parts.path.split("/") if name]
    if not names:
        raise ValueError("no share name (smb://seestar.local/EMMC Images/MyWorks)")
    bad = [n for n in names if n in (".", "..") or "\\" in n or any(ord(c) < 32 for c in n)]
    if bad or parts.query or parts.fragment:
        raise ValueError("a share or folder name holds '..', a backslash, '?' or '#'")
    return SmbUrl(
        host=parts.hostname,
        share=names[0],
        folder=tuple(names[1:]),
        port=port,
        username=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "",
    )


def watch_location(value: Any, key: str, problems: list[str]) -> Any:
    """A local folder, or an smb:// URL read with no mount at all."""
    if isinstance(value, str) and value.lower().startswith(SMB_SCHEME):
        try:
            return parse_smb_url(value)
        except ValueError as exc:
            problems.append(f"{key}: not a usable smb:// URL: {exc}")
            return INVALID
    return folder_path(value, key, problems)


def command_argv(value: Any, key: str, problems: list[str]) -> Any:
    """An argv list, or a string split once with shlex (never handed to a shell)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            problems.append(f"{key}: cannot split the command: {exc}")
            return INVALID
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(arg, str) for arg in value)
        or not value[0].strip()
    ):
        return _expected(problems, key, "a non-empty list of strings (or one string)", value)
    return tuple(value)


def setting(check: Check, default: Any = MISSING, *, factory: Any = MISSING) -> Any:
    """A dataclass field that carries the check that validates its raw value."""
    return field(default=default, default_factory=factory, metadata={"check": check})


def string_list(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        return _expected(problems, key, "a list of non-empty strings", value)
    return tuple(value)


def string_map(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str)
        and k
        and "=" not in k
        and isinstance(v, str | int | float)
        and not isinstance(v, bool)
        for k, v in value.items()
    ):
        return _expected(problems, key, "a mapping of NAME: value", value)
    return {k: str(v) for k, v in value.items()}


def integer(minimum: int, maximum: int, why: str) -> Check:
    """A whole number from `minimum` to `maximum` (`why` says why no more)."""
    what = f"a whole number from {minimum} to {maximum} ({why})"

    def check(value: Any, key: str, problems: list[str]) -> Any:
        if type(value) is not int or not minimum <= value <= maximum:
            return _expected(problems, key, what, value)
        return value

    return check


def optional(check: Check) -> Check:
    """`check`, or null for off."""

    def maybe(value: Any, key: str, problems: list[str]) -> Any:
        return None if value is None else check(value, key, problems)

    return maybe


def text(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value.strip():
        return _expected(problems, key, "a non-empty string", value)
    return value.strip()


def optional_path(value: Any, key: str, problems: list[str]) -> Any:
    return None if value is None else folder_path(value, key, problems)


def pipeline_command(value: Any, key: str, problems: list[str]) -> Any:
    """A command whose placeholders are all known ones."""
    argv = command_argv(value, key, problems)
    if argv is INVALID:
        return INVALID
    from seestar_watch.placeholders import unknown_placeholders

    unknown = unknown_placeholders(argv)
    if unknown:
        from seestar_watch.placeholders import PLACEHOLDERS

        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        problems.append(
            f"{key}: unknown placeholder {', '.join(sorted(unknown))} (known: {known};"
            " write {{ and }} for literal braces)"
        )
        return INVALID
    return argv


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

    @property
    def folder(self) -> Path:
        if self.path is not None:
            return self.path
        from platformdirs import user_data_path

        return user_data_path("seestar-watch") / "archive"


@dataclass(frozen=True)
class StateConfig:
    path: Path | None = setting(optional_path, None)  # None: the user state folder
    process_existing: bool = setting(boolean, False)

    @property
    def ledger(self) -> Path:
        if self.path is not None:
            return self.path
        from platformdirs import user_state_path

        return user_state_path("seestar-watch") / "ledger.sqlite3"


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
        return _expected(problems, key, "HOST:PORT, or off", value)
    try:
        return parse_listen(value)
    except ValueError as exc:
        problems.append(f"{key}: {exc}, got {_shown(value)}")
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
        return _expected(problems, key, "a number", value)
    return float(value)


def result_limits(value: Any, key: str, problems: list[str]) -> Any:
    """`{stars: {below: 20}, fwhm_arcsec: {above: 20}}`: a result field and its limits."""
    if not isinstance(value, Mapping):
        return _expected(problems, key, "a mapping of result field: {below: N, above: N}", value)
    limits, ok = {}, True
    for name, limit in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not name:
            return _expected(problems, key, "result field names", name)
        if not isinstance(limit, Mapping) or not limit or set(limit) - {"below", "above"}:
            _expected(problems, where, "{below: N} and/or {above: N}", limit)
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
        return _expected(problems, key, 'a local time "HH:MM" (e.g. "07:30"), or null', value)
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
        return _expected(problems, key, "a list of {name, ra, dec[, period, epoch]}", value)
    found, ok = [], True
    for n, raw in enumerate(value):
        where = f"{key}[{n}]"
        if (
            not isinstance(raw, Mapping)
            or not {"name", "ra", "dec"} <= set(raw)
            or set(raw) - {"name", "ra", "dec", "period", "epoch"}
        ):
            _expected(problems, where, "{name, ra, dec[, period, epoch]}", raw)
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
        return _expected(problems, key, "{lat: deg, lon: deg (east +)[, elevation: m]}", value)
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

    @property
    def folder(self) -> Path:
        """The config file's folder: relative paths in the config, and the command, start here."""
        return self.source.absolute().parent


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
Section = TypeVar("Section")


def _unknown_key(problems: list[str], key: str, name: str, valid: list[str]) -> None:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"
    problems.append(f"{key}: unknown key{hint}")


def _section(cls: type[Section], raw: Any, name: str, problems: list[str]) -> Section | None:
    if not isinstance(raw, Mapping):
        _expected(problems, name, "a mapping of keys", raw)
        return None
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
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
            else f"expected a mapping of sections, got {_shown(raw)}"
        )
        raise ConfigError(str(source), [what])
    problems += _nul_problems(raw, "")
    if problems:  # a NUL would crash the first path, command or variable that holds it
        raise ConfigError(str(source), problems)
    for name in raw:
        if name not in SECTIONS:
            _unknown_key(problems, str(name), str(name), list(SECTIONS))
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
    return Config(source=source, **sections)


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


# A config is a few KB. A file from a forum can hold an alias bomb ("billion laughs"),
# nesting thousands of levels deep, or a million-item list: each is refused, in one line
# and well under a second, before anything is built from it.
MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_VALUES = 10_000  # values in the document once its aliases are expanded
SHOWN = 80  # characters of a value quoted in an error message


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error, not "the last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in first_seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"{_shown(key)} is given twice (first on line {first_seen[key] + 1})",
                        key_node.start_mark,
                    )
                first_seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """The document in `text`, refusing deep nesting and alias bombs; raises yaml.YAMLError
    or ValueError with the reason."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events: no recursion, no building
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ValueError(f"line {line}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_VALUES:
            raise ValueError(
                f"the document expands to more than {MAX_VALUES:,} values (aliases that repeat"
                " aliases, a 'billion laughs'?): a config is a few dozen keys"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds with every alias expanded, without expanding it
    (an alias is the node it names: sizes are counted once per node and reused)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if children_done:
            sizes[id(node)] = min(MAX_VALUES + 1, 1 + sum(sizes[id(c)] for c in children))
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _shown(value: Any) -> str:
    """A value as an error message quotes it: repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def load_config(path: Path) -> Config:
    """Read, parse and validate one config file."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            limit = f"a config is a few KB (at most {MAX_CONFIG_BYTES:,} bytes)"
            raise ConfigError(str(path), [f"the file is {size:,} bytes; {limit}"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc}"]) from None
    try:
        raw = parse_yaml(text)
    except ValueError as exc:
        raise ConfigError(str(path), [f"refused: {exc}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"YAML syntax error: {where}{exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"YAML syntax error: {exc}"]) from None
    return parse_config(raw, path)


def default_config_path() -> Path:
    from platformdirs import user_config_path

    return user_config_path("seestar-watch") / CONFIG_NAME


def find_config_file(explicit: Path | None) -> Path:
    """-c/--config, then $SEESTAR_WATCH_CONFIG, then ./config.yaml, then the user config folder."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    candidates = [Path.cwd() / CONFIG_NAME, default_config_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ["-c/--config (not given)", f"${CONFIG_ENV} (not set)"] + [str(c) for c in candidates]
    raise ConfigError(
        "config",
        [
            "no config file found; looked at: "
            + ", ".join(looked)
            + "; copy config.example.yaml to one of those places or pass -c FILE"
        ],
    )


def _alerts_summary(alerts: AlertsConfig) -> str:
    from seestar_watch.log import count_of

    if not alerts.urls:
        return "off (no alerts.urls)"
    limits = "; ".join(f"{name} {limit}" for name, limit in alerts.results.items())
    return (
        f"{count_of(len(alerts.urls), 'URL')}; share lost after {alerts.share_lost_after:g} s,"
        f" failures gathered per {alerts.min_interval:g} s, stall after"
        f" {alerts.stalled_after:g} s"
        + (f", results: {limits} ({alerts.results_frames} in a row)" if limits else "")
        + (f", summary at {alerts.summary_at}" if alerts.summary_at else "")
    )


def url_host(host: str) -> str:
    """A host as it goes in a URL: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def _share_line(watcher: WatcherConfig) -> str:
    if isinstance(watcher.watch_path, SmbUrl):
        return "share: read over SMB directly, no mount (check-mount walks every step)"
    if watcher.mount_point:
        return f"share: mounted at {watcher.mount_point} (watched only while mounted)"
    return "share: no mount_point set (an unmounted share's empty folder cannot be told apart)"


def describe(config: Config) -> list[str]:
    """A short human summary, for check-config."""
    from seestar_watch.log import count_of

    watcher, pipeline = config.image_watcher, config.pipeline
    archive = f"copies in {config.archive.folder}" if config.archive.enabled else "off"
    rescan = f"every {watcher.rescan_interval:g} s" if watcher.rescan_interval else "off"
    return [
        f"config: {config.source}",
        f"watch: {watcher.watch_path} ({'recursive' if watcher.recursive else 'this folder only'}"
        f", {'enabled' if watcher.enabled else 'DISABLED'})",
        f"settle: {watcher.debounce_delay:g} s quiet; observer {watcher.observer}"
        f" (polling every {watcher.poll_interval:g} s when it polls); rescans {rescan}",
        f"ignore: {', '.join(watcher.ignore) or 'nothing'}",
        _share_line(watcher),
        f"pipeline: {shlex.join(pipeline.command)}",
        f"  timeout {pipeline.timeout:g} s, {count_of(pipeline.retries, 'retry', 'retries')}"
        f" ({pipeline.retry_delay:g} s apart, growing), {count_of(pipeline.workers, 'worker')}",
        f"archive: {archive}",
        "dashboard: "
        + (
            f"http://{url_host(config.dashboard.listen[0])}:{config.dashboard.listen[1]}/"
            if config.dashboard.listen
            else "off"
        ),
        "alerts: " + _alerts_summary(config.alerts),
        f"ledger: {config.state.ledger}"
        + (
            " (existing frames are processed on first start)"
            if config.state.process_existing
            else ""
        ),
    ]
