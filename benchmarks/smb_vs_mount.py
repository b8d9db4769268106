"""smb:// (no mount, change notifications) against the mount + polling, side by side in one run.

On the SMB test bed (Samba + smbnetfs on loopback, root only), two daemons watch the same
server folder at once: one through the FUSE mount (observer auto = polling), one with
smb://. Then:
- latency: frames written server-side in chunks, last write -> `pipeline.started`;
- idle CPU: 2,000 frames + 2,000 jpg twins in 20 folders, both daemons idle;
- copy throughput: a 4 MB frame read over smb:// against `cp` from the mount.

Usage: python3 benchmarks/smb_vs_mount.py [FRAMES] [IDLE_MINUTES]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Daemon, by_frame, epoch, percentile, seestar_frame, summary

POLL, DEBOUNCE = 2.0, 2.0


def daemon_settings(watch_path: str, **extra: object) -> dict[str, object]:
    return {
        "image_watcher": {
            "watch_path": watch_path,
            "recursive": True,
            "observer": "auto",
            "poll_interval": POLL,
            "debounce_delay": DEBOUNCE,
            **extra,
        },
        "pipeline": {"command": ["true"]},
    }


def write_in_chunks(path: Path, data: bytes, chunks: int = 4, pause: float = 0.2) -> float:
    """Write a frame as a telescope does, growing; the time of the last write."""
    step = -(-len(data) // chunks)
    with path.open("wb") as out:
        for i in range(chunks):
            if i:
                time.sleep(pause)
            out.write(data[i * step : (i + 1) * step])
            out.flush()
    return time.time()


def latency(share: object, root: Path, frames: int) -> None:
    server = share.server / "MyWorks" / "latency"  # type: ignore[attr-defined]
    server.mkdir()
    mounted = share.share / "MyWorks" / "latency"  # type: ignore[attr-defined]
    while not mounted.is_dir():
        time.sleep(0.1)
    daemons = {
        "mount + polling": Daemon(
            root / "mount",
            daemon_settings(str(mounted), mount_point=str(share.mount_point)),  # type: ignore[attr-defined]
        ),
        "smb://": Daemon(
            root / "smb", daemon_settings("smb://127.0.0.1/EMMC Images/MyWorks/latency")
        ),
    }
    for daemon in daemons.values():
        daemon.wait_for("watcher.started")
    folder = server / "M 42_sub"
    folder.mkdir()
    time.sleep(POLL + 1)
    data = seestar_frame()
    written = {}
    for i in range(frames):
        name = f"Light_{i:04d}.fit"
        written[name] = write_in_chunks(folder / name, data)
        time.sleep(POLL + DEBOUNCE + 1.5)
    for label, daemon in daemons.items():
        daemon.wait_for("pipeline.started", frames)
        daemon.stop()
        started = by_frame(daemon.events("pipeline.started"))
        values = [epoch(started[name]) - written[name] for name in written]
        print(f"latency {label} (s): {summary(values)}")
        print(
            f"| frame -> command latency, {label}, debounce {DEBOUNCE:g} s"
            f" | {percentile(values, 0.5):.2f} s | p95 {percentile(values, 0.95):.2f} s |"
        )


def idle_cpu(share: object, root: Path, minutes: float) -> None:
    server = share.server / "MyWorks" / "idle"  # type: ignore[attr-defined]
    data = seestar_frame()
    for target in range(20):
        folder = server / f"Target {target:02d}_sub"
        folder.mkdir(parents=True)
        for i in range(100):
            (folder / f"Light_{i:03d}.fit").write_bytes(data[: 2880 * 2])  # names, not bytes
            (folder / f"Light_{i:03d}.jpg").write_bytes(b"\xff\xd8 preview")
    mounted = share.share / "MyWorks" / "idle"  # type: ignore[attr-defined]
    while not mounted.is_dir():
        time.sleep(0.1)
    daemons = {
        "mount + polling": Daemon(
            root / "idle-mount",
            daemon_settings(str(mounted), mount_point=str(share.mount_point)),  # type: ignore[attr-defined]
        ),
        "smb://": Daemon(
            root / "idle-smb", daemon_settings("smb://127.0.0.1/EMMC Images/MyWorks/idle")
        ),
    }
    for daemon in daemons.values():
        daemon.wait_for("ledger.baseline", timeout=300)
    time.sleep(POLL * 3)  # past the first polls and listings
    before = {label: daemon.cpu_seconds() for label, daemon in daemons.items()}
    started = time.monotonic()
    time.sleep(minutes * 60)
    elapsed = (time.monotonic() - started) / 60
    for label, daemon in daemons.items():
        used = (daemon.cpu_seconds() - before[label]) / elapsed
        daemon.stop()
        print(
            f"| idle CPU, {label}, 2,000 frames + 2,000 jpg twins in 20 folders"
            f" | {used:.3f} CPU s/min |"
        )


def copy_throughput(share: object, root: Path, runs: int = 10) -> None:
    from seestar_watch.config import parse_smb_url
    from seestar_watch.sources.smb import SmbSource

    data = seestar_frame()
    (share.server / "MyWorks" / "copy").mkdir()  # type: ignore[attr-defined]
    (share.server / "MyWorks" / "copy" / "frame.fit").write_bytes(data)  # type: ignore[attr-defined]
    mounted = share.share / "MyWorks" / "copy" / "frame.fit"  # type: ignore[attr-defined]
    while not mounted.exists():
        time.sleep(0.1)
    source = SmbSource(parse_smb_url("smb://127.0.0.1/EMMC Images/MyWorks/copy"))
    smb, cp = [], []
    for run in range(runs):
        target = root / f"copy-{run}.fit"
        started = time.perf_counter()
        with source.open("frame.fit") as frame, target.open("wb") as out:
            while chunk := frame.read(1 << 20):
                out.write(chunk)
        smb.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run(["cp", str(mounted), str(root / f"cp-{run}.fit")], check=True)
        cp.append(time.perf_counter() - started)
    megabytes = len(data) / 1e6
    for label, values in (("smb://", smb), ("cp from the mount", cp)):
        best = megabytes / percentile(values, 0.5)
        print(f"| copy of a 4 MB frame, {label} | {best:.0f} MB/s (median of {runs}) |")


def main(frames: int = 10, minutes: float = 1.0) -> None:
    from tests.smbshare import SambaShare, why_unavailable

    reason = why_unavailable()
    if reason:
        print(f"skipped: {reason}")
        return
    root = Path(tempfile.mkdtemp(prefix="bench-smb-vs-mount-"))
    share = SambaShare(root / "bed")
    share.up()
    try:
        latency(share, root, frames)
        idle_cpu(share, root, minutes)
        copy_throughput(share, root)
    finally:
        share.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 10,
        float(sys.argv[2]) if len(sys.argv) > 2 else 1.0,
    )
