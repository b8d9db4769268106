"""`seestar-watch check-mount`: is my share ready? One answer per check, and the fix.

Everything that touches the share goes through one single-flight prober with an
overall deadline, so the answer comes within the timeout even from a hung share.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from seestar_watch.log import count_of
from seestar_watch.sources import Availability
from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight
from seestar_watch.sources.local import LocalSource
from seestar_watch.sources.mounts import (
    Mount,
    choose_observer,
    enclosing_share,
    mount_at,
    mount_containing,
    not_mounted_reason,
    read_mount_table,
)
from seestar_watch.sources.smburl import SmbUrl

if TYPE_CHECKING:
    from seestar_watch.config import WatcherConfig

SHARE = "//seestar.local/EMMC Images"
CIFS_OPTIONS = (
    "guest,ro,uid=$(id -u),gid=$(id -g),vers=3.0,soft,echo_interval=10,actimeo=1,nounix,"
    "_netdev,nofail"
)


@dataclass
class Check:
    name: str
    status: str  # ok | fail | warning
    detail: str
    fix: str | None = None


@dataclass
class MountReport:
    watch_path: str
    checks: list[Check] = field(default_factory=list)
    mount: dict[str, Any] | None = None
    latency_ms: float | None = None
    frames: int | None = None
    targets: int | None = None
    observer: str | None = None
    # told of each check as it is made: a slow share's answer is streamed, step by step
    listener: Callable[[Check], None] | None = field(default=None, repr=False, compare=False)

    @property
    def ready(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def add(self, check: Check) -> None:
        self.checks.append(check)
        if self.listener is not None:
            self.listener(check)

    def fields(self) -> dict[str, Any]:
        """What it found, JSON-ready."""
        found = asdict(self)
        del found["listener"]
        return found

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, **self.fields()}


def guess_mount_point(config: WatcherConfig) -> str:
    if config.mount_point is not None:
        return str(config.mount_point)
    watch = str(config.watch_path)
    return os.path.dirname(watch) if os.path.basename(watch) == "MyWorks" else watch


def mount_command(point: str, system: str = sys.platform) -> str:
    """The command that mounts the Seestar share read-only at `point` on this OS."""
    if system == "darwin":
        return (
            f"mkdir -p {shlex.quote(point)} && mount_smbfs -o soft,nobrowse"
            f" '//guest:@seestar.local/EMMC%20Images' {shlex.quote(point)}"
        )
    return (
        f"sudo mkdir -p {shlex.quote(point)} && sudo mount -t cifs '{SHARE}'"
        f" {shlex.quote(point)} -o {CIFS_OPTIONS}"
    )


def remount_read_only(point: str, system: str = sys.platform) -> str:
    if system == "darwin":
        return f"umount {shlex.quote(point)} && " + mount_command(point, system).replace(
            "-o soft,nobrowse", "-o soft,nobrowse,rdonly"
        )
    return f"sudo mount -o remount,ro {shlex.quote(point)}"


def check_mount(
    config: WatcherConfig,
    timeout: float,
    system: str = sys.platform,
    listener: Callable[[Check], None] | None = None,
) -> MountReport:
    """Every check, in order; `listener` hears each one as soon as it is made."""
    if isinstance(config.watch_path, SmbUrl):
        return check_smb(config, config.watch_path, timeout, listener)
    deadline = time.monotonic() + timeout
    watch = str(config.watch_path)
    report = MountReport(watch, listener=listener)
    point = guess_mount_point(config)
    mounts = read_mount_table()
    mount = _check_mounted(report, config, mounts, point, system)
    if config.mount_point is not None and mount is None:
        report.add(Check("watch_path", "fail", "not looked at: the share is not mounted"))
        return report
    source = LocalSource(watch, mount_point=config.mount_point)
    state = source.check(max(0.1, deadline - time.monotonic()))
    if not state.is_available:
        report.add(_unavailable(state.availability, state.reason, point, system))
        return report
    report.latency_ms = round((state.latency or 0) * 1000, 1)
    report.add(Check("watch_path", "ok", f"{watch} is a folder"))
    report.add(Check("answers", "ok", f"listed in {report.latency_ms} ms"))
    _count(report, config, SingleFlight("seestar-watch-check"), deadline)
    kind, why = choose_observer(config.observer, watch, mounts)
    report.observer = kind
    report.add(Check("observer", "ok", f"{config.observer} uses {kind}: {why}"))
    return report


def check_smb(
    config: WatcherConfig,
    url: SmbUrl,
    timeout: float,
    listener: Callable[[Check], None] | None = None,
) -> MountReport:
    """check-mount for an smb:// watch_path: every step of reaching the share, in order."""
    from seestar_watch.sources.smbcheck import diagnose

    report = MountReport(str(url), listener=listener)
    found = diagnose(
        url,
        timeout,
        ignore=config.ignore,
        observer=config.observer,
        on_step=lambda step: report.add(Check(*step)),
    )
    report.latency_ms, report.frames, report.targets = found.latency_ms, found.frames, found.targets
    report.observer = found.observer
    return report


def check_mount_isolated(
    config: WatcherConfig, timeout: float, system: str = sys.platform
) -> MountReport:
    """check_mount in a forked child, so that a hung share cannot hold *this* process.

    A thread blocked in a call on a hung FUSE or CIFS mount keeps its whole process
    alive in the kernel until the call returns, exit or not; a child that is left
    behind does not delay the answer, nor this process's exit.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: each check on the pipe as it is made, then go (perhaps slowly)
        os.close(read_end)
        # let go of the caller's terminal or pipes, or `$(seestar-watch check-mount)` would
        # wait for this child to finish its hung call
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)

        def say(what: dict[str, Any]) -> None:
            os.write(write_end, json.dumps(what).encode() + b"\n")

        try:
            report = check_mount(config, timeout, system, lambda c: say({"check": asdict(c)}))
            say({"report": report.fields()})
        except BaseException as exc:  # reported by the parent as a failed check
            say({"error": f"{type(exc).__name__}: {exc}"})
        os._exit(0)
    os.close(write_end)
    try:
        lines = _read_lines(read_end, time.monotonic() + timeout + 0.5)
    finally:
        os.close(read_end)
        os.waitpid(pid, os.WNOHANG)
    return _report_from(lines, config, timeout)


def _read_lines(fd: int, deadline: float) -> list[bytes]:
    """The whole lines the child wrote up to its last one (its report, or an error) or
    the deadline; not up to its exit: a call stuck on a hung mount can keep it alive."""
    data = b""
    while not data.endswith(b"\n") or not data.rsplit(b"\n", 2)[-2].startswith(FINAL):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:-1]


FINAL = (b'{"report"', b'{"error"')  # the child's last line


def _report_from(lines: list[bytes], config: WatcherConfig, timeout: float) -> MountReport:
    """The child's report; or, when it did not finish in time, the checks it made (what
    passed is kept: a slow share is told apart from a dead one) and one that failed."""
    report = MountReport(str(config.watch_path))
    for line in lines:
        said = json.loads(line)
        if "report" in said:
            found = said["report"]
            found["checks"] = [Check(**check) for check in found["checks"]]
            return MountReport(**found)
        if "check" in said:
            report.add(Check(**said["check"]))
        if "error" in said:
            report.add(Check("answers", "fail", said["error"]))
            return report
    slow = " (it answers, slowly: the steps above passed)" if report.checks else ""
    report.add(Check("answers", "fail", f"no further answer within {timeout:g} s{slow}"))
    return report


def _check_mounted(
    report: MountReport, config: WatcherConfig, mounts: list[Mount], point: str, system: str
) -> Mount | None:
    watch = str(config.watch_path)
    if config.mount_point is not None:
        mount = mount_at(point, mounts)
        if mount is None:
            enclosing = enclosing_share(point, mounts)
            fix = (
                mount_command(point, system)
                if enclosing is None
                else f"set image_watcher.mount_point: {enclosing.mount_point} in the config"
            )
            report.add(Check("mounted", "fail", not_mounted_reason(point, mounts), fix))
            return None
    else:
        mount = mount_containing(watch, mounts)
    if mount is None:
        report.add(Check("mounted", "warning", "the mount table could not be read"))
        return None
    report.mount = {
        "mount_point": mount.mount_point,
        "fstype": mount.fstype,
        "source": mount.source,
        "read_only": mount.is_read_only,
    }
    where = f"{mount.source} at {mount.mount_point} ({mount.fstype})"
    if mount.is_network:
        report.add(Check("mounted", "ok", where))
    else:
        report.add(
            Check(
                "mounted",
                "warning",
                f"{watch} is on a local filesystem: {where}. Is the share mounted? Set"
                " image_watcher.mount_point so an empty mount-point folder is never watched",
                mount_command(point, system),
            )
        )
        return mount
    if mount.is_read_only:
        report.add(Check("read_only", "ok", "mounted read-only"))
    else:
        report.add(
            Check(
                "read_only",
                "warning",
                "mounted read-write: any tool could write to the telescope",
                remount_read_only(mount.mount_point, system),
            )
        )
    return mount


def _unavailable(availability: Availability, reason: str, point: str, system: str) -> Check:
    if availability is Availability.MISSING:
        return Check(
            "watch_path",
            "fail",
            reason,
            "check image_watcher.watch_path (the Seestar keeps its frames in MyWorks/)"
            " or mount the share: " + mount_command(point, system),
        )
    unmount = "umount" if system == "darwin" else "sudo umount -l"
    return Check(
        "answers",
        "fail",
        reason,
        "is the Seestar on and in station mode on your Wi-Fi (ping seestar.local)?"
        f" Then remount: {unmount} {shlex.quote(point)} && " + mount_command(point, system),
    )


def _count(
    report: MountReport, config: WatcherConfig, prober: SingleFlight, deadline: float
) -> None:
    watch = str(config.watch_path)

    everything = LocalSource(watch, recursive=True, ignore=config.ignore)

    def count() -> tuple[int, int, int]:
        frames = [entry.relpath for entry in everything.list_frames()]
        folders = {os.path.dirname(relpath) for relpath in frames}
        below = sum(1 for relpath in frames if os.path.dirname(relpath))
        return len(frames), len(folders), below

    try:
        report.frames, report.targets, below = prober.call(
            count, max(0.1, deadline - time.monotonic())
        )
    except ProbeTimeout:
        report.add(Check("readable", "warning", "still counting frames at the timeout"))
        return
    except OSError as exc:
        report.add(Check("readable", "fail", f"listing failed: {exc.strerror or exc}"))
        return
    report.add(
        Check(
            "readable",
            "ok",
            f"{count_of(report.frames, 'FITS frame')} in {count_of(report.targets, 'folder')}",
        )
    )
    if below and not config.recursive:
        report.add(
            Check(
                "recursive",
                "warning",
                f"{count_of(below, 'FITS frame')} in sub-folders of {watch} will never be seen:"
                " recursive is false (the Seestar writes into MyWorks/<target>_sub/)",
                "set image_watcher.recursive: true in the config",
            )
        )


def render(report: MountReport) -> str:
    lines = [f"check-mount: {report.watch_path}"]
    for check in report.checks:
        lines.append(f"{check.status:<8}{check.name:<12}{check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"{'':<20}fix: {check.fix}")
    lines.append("ready" if report.ready else "NOT READY")
    return "\n".join(lines)
