"""The local archive: exact copies, never overwriting a different file, never writing the source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seestar_watch.archive import ArchiveError, SourceChanged
from seestar_watch.archive import archive_copy as copy_through_source
from seestar_watch.sources import Version
from seestar_watch.sources.local import LocalSource


def archive_copy(source: str, root: Path, relpath: str, version: object) -> Path:
    """The copy of the local file `source` (its relpath below the share folder)."""
    share = LocalSource(source[: -len(relpath) - 1])
    return copy_through_source(share, relpath, root, version)  # type: ignore[arg-type]


def version_of(root: str, path: str, size: int, mtime_ns: int) -> Version:
    return Version(os.path.relpath(path, root), size, mtime_ns)


def source_file(tmp_path: Path, content: bytes, name: str = "M 42_sub/a.fit") -> tuple[Path, str]:
    share = tmp_path / "share"
    path = share / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, name


def version(path: Path, root: Path) -> object:
    info = path.stat()
    return version_of(str(root), str(path), info.st_size, info.st_mtime_ns)


def test_copy_is_exact_and_the_source_untouched(tmp_path: Path) -> None:
    content = os.urandom(3_000_000)
    path, relpath = source_file(tmp_path, content)
    before = path.stat()
    copy = archive_copy(str(path), tmp_path / "archive", relpath, version(path, tmp_path / "share"))
    assert copy == tmp_path / "archive" / relpath
    assert copy.read_bytes() == content and path.read_bytes() == content
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert [p.name for p in copy.parent.iterdir()] == ["a.fit"]


def test_an_identical_existing_copy_is_reused_a_different_one_never_replaced(
    tmp_path: Path,
) -> None:
    path, relpath = source_file(tmp_path, b"first version")
    root = tmp_path / "archive"
    first = archive_copy(str(path), root, relpath, version(path, tmp_path / "share"))
    assert archive_copy(str(path), root, relpath, version(path, tmp_path / "share")) == first
    path.write_bytes(b"second version, longer")
    second = archive_copy(str(path), root, relpath, version(path, tmp_path / "share"))
    assert second.name == "a.v2.fit"
    assert first.read_bytes() == b"first version"
    assert second.read_bytes() == b"second version, longer"


def test_a_source_that_changed_since_it_settled_is_refused(tmp_path: Path) -> None:
    path, relpath = source_file(tmp_path, b"settled")
    settled = version(path, tmp_path / "share")
    path.write_bytes(b"grew after settling")
    with pytest.raises(SourceChanged):
        archive_copy(str(path), tmp_path / "archive", relpath, settled)  # type: ignore[arg-type]
    assert not (tmp_path / "archive" / relpath).exists()


def test_a_vanished_source_is_refused(tmp_path: Path) -> None:
    path, relpath = source_file(tmp_path, b"here")
    settled = version(path, tmp_path / "share")
    path.unlink()
    with pytest.raises(SourceChanged, match="gone"):
        archive_copy(str(path), tmp_path / "archive", relpath, settled)  # type: ignore[arg-type]


def test_a_symlink_source_is_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    share = tmp_path / "share"
    share.mkdir()
    (share / "x.fit").symlink_to(secret)
    fake = version_of(str(share), str(share / "x.fit"), 7, secret.stat().st_mtime_ns)
    with pytest.raises(SourceChanged):
        archive_copy(str(share / "x.fit"), tmp_path / "archive", "x.fit", fake)


def test_paths_outside_the_archive_are_refused(tmp_path: Path) -> None:
    path, _ = source_file(tmp_path, b"x")
    with pytest.raises(ArchiveError, match="outside the archive"):
        archive_copy(
            str(path), tmp_path / "archive", "../escape.fit", version(path, tmp_path / "share")
        )  # type: ignore[arg-type]


def test_an_unwritable_archive_is_an_archive_error(tmp_path: Path) -> None:
    path, relpath = source_file(tmp_path, b"x")
    blocker = tmp_path / "archive"
    blocker.write_text("a file where the archive folder should be")
    with pytest.raises(ArchiveError):
        archive_copy(str(path), blocker, relpath, version(path, tmp_path / "share"))  # type: ignore[arg-type]


def dead_pid() -> int:
    """A pid no process has now (a process that ran and was reaped)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_leftover_temporaries_of_a_cut_off_copy_are_removed_and_nothing_else(
    tmp_path: Path,
) -> None:
    from seestar_watch.archive import remove_leftovers

    archive = tmp_path / "archive" / "M 42_sub"
    archive.mkdir(parents=True)
    cut_off = archive / f".seestar-watch.{dead_pid()}.140000.partial"
    cut_off.write_bytes(b"half a frame")
    running = archive / f".seestar-watch.{os.getpid()}.1.partial"  # a copy under way now
    running.write_bytes(b"being copied")
    frame = archive / "a.fit"
    frame.write_bytes(b"a frame")
    lookalike = archive / ".seestar-watch.notes"
    lookalike.write_text("not ours")
    outside = tmp_path / f".seestar-watch.{dead_pid()}.1.partial"  # not in the archive
    outside.write_bytes(b"x")
    assert remove_leftovers(tmp_path / "archive") == [cut_off]
    assert not cut_off.exists()
    assert running.exists() and frame.exists() and lookalike.exists() and outside.exists()


def test_a_second_version_of_a_255_byte_name_is_archived_under_a_short_stable_name(
    tmp_path: Path,
) -> None:
    name = "Light_" + "é" * 120 + "x" * 5 + ".fit"  # 255 bytes in UTF-8
    assert len(os.fsencode(name)) == 255
    path, relpath = source_file(tmp_path, b"first version", name=f"M 42_sub/{name}")
    root = tmp_path / "archive"
    first = archive_copy(str(path), root, relpath, version(path, tmp_path / "share"))
    assert first.name == name
    path.write_bytes(b"second version, longer")
    second = archive_copy(str(path), root, relpath, version(path, tmp_path / "share"))
    assert second.read_bytes() == b"second version, longer"
    assert len(os.fsencode(second.name)) <= 255
    assert second.name.startswith("Light_éé") and second.name.endswith(".v2.fit")
    assert "~" in second.name
    from seestar_watch.archive import versioned

    assert versioned(first, 2) == second  # the same short name every time
    assert first.read_bytes() == b"first version"


def test_a_frame_rewritten_during_the_copy_with_its_time_put_back_is_refused(
    tmp_path: Path,
) -> None:
    # same size, same mtime, different bytes: only the bytes can tell (a mount's attribute
    # cache hides such a rewrite too)
    from seestar_watch.archive import archive_copy as copy_through
    from seestar_watch.sources.local import LocalFrame

    old, new = os.urandom(3_000_000), os.urandom(3_000_000)
    path, relpath = source_file(tmp_path, old)
    settled = version(path, tmp_path / "share")
    times = path.stat()

    class RewrittenAfterTheFirstChunk(LocalFrame):
        def read(self, count: int) -> bytes:
            chunk = super().read(count)
            if path.read_bytes() == old:  # the telescope rewrites it in place, time put back
                with path.open("r+b") as out:
                    out.write(new)
                os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
            return chunk

    share = LocalSource(str(tmp_path / "share"))
    opened = []

    def open_frame(relative: str) -> LocalFrame:
        frame = (RewrittenAfterTheFirstChunk if not opened else LocalFrame)(share.path_of(relative))
        opened.append(frame)
        return frame

    share.open = open_frame  # type: ignore[method-assign]
    with pytest.raises(SourceChanged, match="rewritten while it was copied"):
        copy_through(share, relpath, tmp_path / "archive", settled)  # type: ignore[arg-type]
    assert not (tmp_path / "archive" / relpath).exists()
