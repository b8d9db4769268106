"""Polling whose cost follows the folders that change, not the frames kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seestar_watch.sources import frame_filter
from seestar_watch.sources.poller import FolderPoller


def tree(root: Path, folders: int = 20, frames: int = 100) -> None:
    for target in range(folders):
        folder = root / f"Target {target:02d}_sub"
        folder.mkdir(parents=True)
        for i in range(frames):
            (folder / f"Light_{i:03d}.fit").write_bytes(b"x")
            (folder / f"Light_{i:03d}.jpg").write_bytes(b"x")


def test_an_idle_poll_lists_nothing_and_stats_only_the_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree(tmp_path)
    reported: list[str] = []
    poller = FolderPoller(
        str(tmp_path), recursive=True, wanted=frame_filter(()), interval=60, on_path=reported.append
    )
    poller._list(poller.root, report=False)  # the reference listing
    calls = {"scandir": 0, "stat": 0, "lstat": 0}
    real = {name: getattr(os, name) for name in calls}

    def counting(name: str) -> object:
        def call(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return real[name](*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(os, name, counting(name))
    poller.poll()
    assert calls == {"scandir": 0, "stat": 21, "lstat": 0}  # 2,000 frames cost nothing
    assert reported == []

    monkeypatch.undo()
    new = tmp_path / "Target 07_sub" / "Light_new.fit"
    new.write_bytes(b"arriving")
    os.utime(new.parent, ns=(1, 10**18))  # a folder time that surely moved
    for name in calls:
        calls[name] = 0
        monkeypatch.setattr(os, name, counting(name))
    poller.poll()
    assert reported == [str(new)]
    assert calls["scandir"] == 1  # only the folder that changed was listed
    assert calls["lstat"] == 1  # and only the new frame is looked at again


def test_growth_of_a_recent_frame_and_a_new_folder_are_reported(tmp_path: Path) -> None:
    reported: list[str] = []
    poller = FolderPoller(
        str(tmp_path), recursive=True, wanted=frame_filter(()), interval=60, on_path=reported.append
    )
    poller._list(poller.root, report=False)
    frame = tmp_path / "M 81_sub" / "a.fit"
    frame.parent.mkdir()
    frame.write_bytes(b"x" * 10)
    os.utime(tmp_path, ns=(1, 10**18))
    poller.poll()
    assert reported == [str(frame)]
    with frame.open("ab") as out:  # it grows: the folder's time does not move
        out.write(b"y" * 10)
    os.utime(frame, ns=(1, 10**18 + 5))
    poller.poll()
    assert reported == [str(frame), str(frame)]
    frame.unlink()
    poller.poll()
    assert reported == [str(frame), str(frame)] and str(frame) not in poller._files


def a_mount_showing_a_loop(root: Path) -> None:
    """What a mount shows of `MyWorks/loop -> .` on the server: `loop/` as a plain folder
    holding what its parent holds, its `M 42_sub/` caught a moment later (a frame being
    written there: another size, another folder time)."""
    for base, size in ((root, 100), (root / "loop", 200)):
        (base / "M 42_sub").mkdir(parents=True)
        (base / "M 42_sub" / "new.fit").write_bytes(b"x" * size)
        os.utime(base / "M 42_sub", ns=(size * 10**9, size * 10**9))
    (root / "loop" / "loop").mkdir()


def test_a_folder_that_shows_its_parent_again_is_never_entered(tmp_path: Path) -> None:
    from seestar_watch.sources.local import LocalSource

    a_mount_showing_a_loop(tmp_path)
    listed = [e.relpath for e in LocalSource(str(tmp_path)).list_frames()]
    assert listed == ["M 42_sub/new.fit"]  # not loop/M 42_sub/new.fit as well
    reported: list[str] = []
    poller = FolderPoller(
        str(tmp_path), recursive=True, wanted=frame_filter(()), interval=60, on_path=reported.append
    )
    poller._list(poller.root, report=True)
    assert [os.path.relpath(p, tmp_path) for p in reported] == ["M 42_sub/new.fit"]
