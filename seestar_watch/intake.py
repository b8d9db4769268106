"""Intake: the one way a frame becomes a ledger row, pending or rejected.

Frames that settled (events and rescans, through settle), frames listed by
`run --once`, and frames named by `seestar-watch process` all come through here,
so each is recorded, logged and rejected by the same rules.
"""

from __future__ import annotations

from seestar_watch.fitsheader import HeaderRead, Status, read_header_of
from seestar_watch.ledger import Ledger
from seestar_watch.log import get_logger
from seestar_watch.settle import GaveUp
from seestar_watch.sources import Entry, Source, Version

log = get_logger("seestar_watch.intake")


def record(ledger: Ledger, source: Source, entry: Entry, header: HeaderRead) -> str | None:
    """A version that finished arriving: "pending", "rejected" (not FITS, with the header's
    reason), or None when the ledger knew this version already."""
    version = entry.version
    if header.status is Status.INVALID:
        return _reject(ledger, source, version, header.reason)
    if ledger.add_pending(version, header.cards):
        log.info(
            "frame.settled",
            frame=entry.relpath,
            path=source.path_of(entry.relpath),
            size_kb=round(entry.size / 1024, 1),
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
    _reject(ledger, source, gave_up.entry.version, reason)


def read_and_record(ledger: Ledger, source: Source, relpath: str) -> tuple[str, HeaderRead]:
    """A listed or named frame, taken now without waiting for it to be quiet: its state
    ("pending", "rejected", "known", or why it was not recorded) and its header."""
    header = read_header_of(lambda: source.open(relpath))
    version = header.version
    if header.status in (Status.GONE, Status.UNAVAILABLE) or version is None:
        return f"not readable: {header.reason}", header
    if header.status is Status.INCOMPLETE:
        log.info("frame.incomplete", frame=relpath, reason=header.reason, note="next time")
        return f"still arriving: {header.reason}", header
    outcome = record(ledger, source, Entry(relpath, *version), header)
    return outcome or "known", header


def _reject(ledger: Ledger, source: Source, version: Version, reason: str) -> str | None:
    if not ledger.add_rejected(version, reason):
        return None
    log.warning(
        "frame.rejected", frame=version.name, path=source.path_of(version.name), reason=reason
    )
    return "rejected"
