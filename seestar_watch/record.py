"""Recording: the one way a frame becomes a ledger row, pending or rejected.

Frames that settled (events and rescans, through settle), frames listed by
`run --once`, and frames named by `seestar-watch process` all come through here,
so each is recorded, logged and rejected by the same rules.
"""

from __future__ import annotations

from seestar_watch.fitsheader import HeaderRead, Status, read_header_of
from seestar_watch.ledger import Ledger
from seestar_watch.log import get_logger
from seestar_watch.settle import GaveUp
from seestar_watch.sources import Source, Version

log = get_logger("seestar_watch.intake")  # the name its log lines have always had


def record(
    ledger: Ledger, source: Source, version: Version, header: HeaderRead, *, max_frame_mb: float
) -> str | None:
    """A version that finished arriving: "pending", "rejected" (not FITS, a time or size
    out of range, larger than max_frame_mb: with the reason), "skipped" (a frame recorded
    already under another path), or None when the ledger knew this version already."""
    problem = frame_problem(version, header, max_frame_mb)
    if problem is not None:
        return _reject(ledger, source, version, problem)
    twin = ledger.spelled_elsewhere(version)
    if twin is not None:  # one file is one frame, whatever its spellings
        reason = f"the same frame as {twin} (seen through another spelling of its folder)"
        if ledger.add_skipped(version, reason, header.cards):
            log.info("frame.second_spelling", frame=version.relpath, same_as=twin)
            return "skipped"
        return None
    if ledger.add_pending(version, header.cards):
        log.info(
            "frame.settled",
            frame=version.relpath,
            path=source.path_of(version.relpath),
            size_kb=round(version.size / 1024, 1),
        )
        return "pending"
    return None


def record_gave_up(ledger: Ledger, source: Source, gave_up: GaveUp) -> None:
    """A frame that stayed incomplete for incomplete_timeout is rejected; a share that
    stayed unavailable is the share's fault, not the frame's: it is only logged."""
    path = source.path_of(gave_up.relpath)
    if gave_up.status is Status.UNAVAILABLE or gave_up.entry is None:
        log.warning("frame.unreadable", frame=gave_up.relpath, path=path, reason=gave_up.reason)
        return
    reason = f"incomplete: {gave_up.reason} after waiting {gave_up.waited:.0f} s"
    _reject(ledger, source, gave_up.entry, reason)


def frame_problem(version: Version, header: HeaderRead, max_frame_mb: float) -> str | None:
    """Why a version that finished arriving is not a frame to run, or None: not a FITS file
    we accept, a time or size out of range, or larger than max_frame_mb."""
    if header.status is Status.INVALID:
        return header.reason
    return version.problem or _too_large(version.size, header.expected_size, max_frame_mb)


def _too_large(size: int, promised: int | None, max_frame_mb: float) -> str | None:
    """Why a frame is too large to copy and run (a sparse file on a guest share can claim
    gigabytes in a few KB of disk), or None."""
    limit = max_frame_mb * 1e6
    largest = max(size, promised or 0)
    if largest <= limit:
        return None
    what = "its size" if size >= (promised or 0) else "the size its header promises"
    return (
        f"{what} ({largest / 1e6:,.0f} MB) is above image_watcher.max_frame_mb"
        f" ({max_frame_mb:g} MB): not copied, not run"
    )


def read_and_record(
    ledger: Ledger, source: Source, relpath: str, *, max_frame_mb: float
) -> tuple[str, HeaderRead]:
    """A listed or named frame, taken now without waiting for it to be quiet: its state
    ("pending", "rejected", "known", or why it was not recorded) and its header."""
    header = read_header_of(lambda: source.open(relpath))
    stamp = header.version
    if header.status in (Status.GONE, Status.UNAVAILABLE) or stamp is None:
        return f"not readable: {header.reason}", header
    if header.status is Status.INCOMPLETE:
        log.info("frame.incomplete", frame=relpath, reason=header.reason, note="next time")
        return f"still arriving: {header.reason}", header
    outcome = record(ledger, source, Version(relpath, *stamp), header, max_frame_mb=max_frame_mb)
    return outcome or "known", header


def _reject(ledger: Ledger, source: Source, version: Version, reason: str) -> str | None:
    if not ledger.add_rejected(version, reason):
        return None
    log.warning(
        "frame.rejected", frame=version.relpath, path=source.path_of(version.relpath), reason=reason
    )
    return "rejected"
