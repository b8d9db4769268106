"""The pipeline commands' processes: they die with the daemon, outlive no run, and a previous
daemon's are stopped before a frame is run again (psutil, and prctl on Linux).

- A command gets SIGTERM when the daemon dies, even by SIGKILL (Linux: a parent-death
  signal set in the child before exec).
- A command that escapes its process group (double fork and setsid, a solver left in the
  background) is reparented to the daemon (Linux: a child subreaper) instead of to init,
  and stopped when the run that started it is over, with a log line naming it.
- At start, a command group recorded as running by a daemon that was killed is stopped,
  if it is still alive and still that command (its processes started after the recorded
  start time of the command: pids are reused).
Under systemd, KillMode=mixed also stops everything in the service's cgroup at stop.
macOS has none of the Linux calls: there the group is still stopped on timeouts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

import psutil

from seestar_watch.log import get_logger

if TYPE_CHECKING:
    from seestar_watch.ledger import Ledger

log = get_logger("seestar_watch.children")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for what is left behind

_LINUX = sys.platform.startswith("linux")
_prctl = ctypes.CDLL(None, use_errno=True).prctl if _LINUX else None
_running: set[int] = set()  # pids of the commands running now, on every worker
_running_lock = threading.Lock()
_starting = threading.Lock()  # a command being started and registered (see `starting`)


def die_with_parent() -> None:
    """Run in the child between fork and exec: SIGTERM when the daemon's thread dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def become_subreaper() -> bool:
    """Adopt the orphans of our descendants, so that none escapes to init."""
    return _prctl is not None and _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def started(pid: int) -> float | None:
    """A command started: remember it as running; its start time (to recognise it later)."""
    with _running_lock:
        _running.add(pid)
    return start_time(pid)


def start_time(pid: int) -> float | None:
    """When process `pid` started (with its pid, it names one process: pids are reused)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def starting() -> threading.Lock:
    """Held around starting a command and `started` (pipeline.run_command's start_guard):
    another worker's `finished` never takes a command being started for a stray."""
    return _starting


def finished(pid: int) -> None:
    """A command's run is over: what it left behind, reparented to us, is stopped."""
    with _starting:  # no command is half started while we look
        with _running_lock:
            _running.discard(pid)
            running = set(_running)
        try:
            children = psutil.Process().children()
        except psutil.Error:
            return
    for child in children:
        if child.pid in running:
            continue
        try:
            name, zombie = child.name(), child.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
        if not zombie:
            log.warning(
                "pipeline.escaped_stopped",
                pid=child.pid,
                command=name,
                note="left behind by a finished command, outside its process group",
            )
            _stop([child])
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)  # reap it: orphans are ours now


def stop_orphan_group(pgid: int, since: float) -> list[str]:
    """Stop the processes of group `pgid` started at or after `since` (a killed daemon's
    command and what it started); the names of those stopped."""
    members = []
    for process in psutil.process_iter(["pid", "name", "create_time"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["create_time"] >= since - 0.01:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    _stop(members)
    return [str(process.info["name"]) for process in members]


def _stop(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=STOP_GRACE)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=1.0)


def stop_orphans(ledger: Ledger) -> None:
    """Commands a killed daemon left running are stopped before their frames run again."""
    for frame, pid, started in ledger.orphans():
        stopped = stop_orphan_group(pid, started)
        if stopped:
            log.warning(
                "pipeline.orphan_stopped",
                frame=frame,
                pid=pid,
                commands=stopped,
                note="still running from a daemon that was killed; the frame runs again",
            )
