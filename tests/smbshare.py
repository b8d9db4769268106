"""A real SMB share for the tests, shaped like the Seestar's.

Samba serves a guest share "EMMC Images" on 127.0.0.1:445 and smbnetfs mounts it
through FUSE. Files written into `server` appear on the mount the way a
telescope's frames appear on a laptop: the client's kernel sees no change, so no
inotify event. Needs root, /dev/fuse and Debian's samba, smbnetfs and fuse3
(`.ci/run` installs them); tests using it are skipped with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import frame_bytes, real_header

SMB_CONF = """\
[global]
  interfaces = lo
  bind interfaces only = yes
  smb ports = 445
  map to guest = Bad User
  guest account = root
  server min protocol = SMB2
  pid directory = {etc}/run
  lock directory = {etc}/lock
  state directory = {etc}/state
  cache directory = {etc}/cache
  private dir = {etc}/private
  ncalrpc dir = {etc}/ncalrpc
  log file = {etc}/log/%m.log
  disable spoolss = yes
  load printers = no
{extra}
[EMMC Images]
  path = {server}
  guest ok = yes
  read only = no
"""
SMBNETFS_CONF = 'auth "guest" ""\nshow_$_shares "false"\nsmb_query_browsers "false"\n'


def why_unavailable() -> str | None:
    """None when a share can be made here, else the reason the tests are skipped."""
    if os.geteuid() != 0:
        return "the SMB test bed needs root (smbd on port 445, FUSE mounts)"
    if not os.path.exists("/dev/fuse"):
        return "the SMB test bed needs /dev/fuse"
    missing = [tool for tool in ("smbd", "smbnetfs", "fusermount3") if shutil.which(tool) is None]
    if missing:
        return f"the SMB test bed needs {', '.join(missing)} (apt-get install samba smbnetfs fuse3)"
    if _port_open():
        return "127.0.0.1:445 is already served (another SMB test bed is up)"
    return None


def _port_open() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 445)) == 0


def _wait(condition: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"SMB test bed: {what} within {timeout} s")


class SambaShare:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = root / "server"  # what the telescope writes
        self.mount_point = root / "mnt"
        self.share = self.mount_point / "127.0.0.1" / "EMMC Images"
        self._etc = root / "etc"
        self._home = root / "home"
        self.extra = ""  # more [global] settings, e.g. "change notify = no"

    # -- the server ------------------------------------------------------------

    def start_server(self) -> None:
        for sub in ("run", "lock", "state", "cache", "private", "log", "ncalrpc"):
            (self._etc / sub).mkdir(parents=True, exist_ok=True)
        (self.server / "MyWorks").mkdir(parents=True, exist_ok=True)
        os.chmod(self.server, 0o777)
        conf = self._etc / "smb.conf"
        conf.write_text(SMB_CONF.format(etc=self._etc, server=self.server, extra=self.extra))
        # a session of its own: when smbd stops it signals its whole process group
        subprocess.run(
            ["smbd", "-s", str(conf), "-D", "--no-process-group"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        _wait(_port_open, "smbd did not listen")

    def stop_server(self) -> None:
        pid = self._server_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: not _alive(pid) and not _port_open(), "smbd did not stop")
        # smbd starts the RPC helpers (share lists) on demand; they outlive it otherwise
        subprocess.run(
            ["pkill", "-f", "--", f"--configfile={self._etc}/smb.conf"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def freeze_server(self) -> None:
        """SIGSTOP every smbd: calls on the mount hang, like a scope that stopped answering."""
        for pid in self._all_server_pids():
            with contextlib.suppress(ProcessLookupError):  # a child that just ended
                os.kill(pid, signal.SIGSTOP)

    def thaw_server(self) -> None:
        for pid in self._all_server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _server_pid(self) -> int | None:
        pidfile = self._etc / "run" / "smbd.pid"
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _all_server_pids(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-f", f"smbd -s {self._etc}/smb.conf"],
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(pid) for pid in found.stdout.split()]

    # -- the client mount ------------------------------------------------------

    def mount(self) -> None:
        self.mount_point.mkdir(parents=True, exist_ok=True)
        smb = self._home / ".smb"
        smb.mkdir(parents=True, exist_ok=True)
        (smb / "smb.conf").write_text("[global]\n  client min protocol = SMB2\n")
        (smb / "smbnetfs.conf").write_text(SMBNETFS_CONF)
        (smb / "smbnetfs.conf").chmod(0o600)
        env = {**os.environ, "HOME": str(self._home)}
        subprocess.run(
            ["smbnetfs", str(self.mount_point), "-o", "allow_other"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        _wait((self.share / "MyWorks").is_dir, "the mount did not come up")

    def unmount(self) -> None:
        if self.is_mounted():
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mount_point)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait(lambda: not self.is_mounted(), "the mount did not go away")

    def is_mounted(self) -> bool:
        target = f" {self.mount_point} "
        with open("/proc/self/mountinfo") as table:
            return any(target in line and "fuse.smbnetfs" in line for line in table)

    # -- whole ---------------------------------------------------------------

    def up(self) -> None:
        self.start_server()
        self.mount()

    def down(self) -> None:
        self.thaw_server()
        self.unmount()
        self.stop_server()

    def reconfigure(self, extra: str) -> None:
        """Serve again with more [global] settings ("" for the usual ones)."""
        self.thaw_server()
        self.stop_server()
        self.extra = extra
        self.start_server()

    def restore(self) -> None:
        """Back to serving and mounted, whatever a test did to it."""
        if self.extra:
            self.reconfigure("")
        self.thaw_server()
        if self._server_pid() is None:
            self.start_server()
        if not self.is_mounted():
            self.mount()
        _wait(self._answers, "the share did not answer again", timeout=30)

    def _answers(self) -> bool:
        try:
            os.listdir(self.share / "MyWorks")
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def telescope_writes(
    folder: Path,
    name: str,
    *,
    chunks: int = 6,
    pause: float = 0.25,
    via_temp: bool = False,
    content: bytes | None = None,
) -> Path:
    """Write a frame server-side the way a scope might: growing in chunks, with jpg twins."""
    folder.mkdir(parents=True, exist_ok=True)
    data = content if content is not None else frame_bytes(real_header())
    final = folder / name
    target = folder / (name + ".tmp") if via_temp else final
    step = -(-len(data) // chunks)
    with target.open("wb") as out:
        for i in range(chunks):
            out.write(data[i * step : (i + 1) * step])
            out.flush()
            time.sleep(pause)
    if via_temp:
        target.rename(final)
    stem = final.with_suffix("")
    (folder / f"{stem.name}.jpg").write_bytes(b"\xff\xd8 preview")
    (folder / f"{stem.name}_thn.jpg").write_bytes(b"\xff\xd8 thumb")
    return final


class HostileServer:
    """impacket's SMB2 server (tests/hostile_smb_server.py) on a port of its own, its answers
    bent by `modes`, serving `folder` as "EMMC Images": beside Samba, never on port 445."""

    def __init__(self, folder: Path, *modes: str) -> None:
        self.folder = folder
        self.modes = modes
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"smb://127.0.0.1:{self.port}/EMMC Images"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HostileServer:
        import sys

        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("hostile_smb_server.py")),
             str(self.port), str(self.folder), *self.modes],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(lambda: _port_answers(self.port), "the impacket server did not listen")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)


def impacket_missing() -> str | None:
    try:
        import impacket.smbserver  # noqa: F401
    except ImportError:
        return "impacket is not installed (pip install -e '.[test]')"
    return None


def _port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
