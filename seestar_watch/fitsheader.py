"""Reading the primary header of an untrusted FITS file, safely and quickly.

Files on a guest share are untrusted (FIFOs, symlinks to /dev/zero, gzip bombs,
headers without END, absurd axes), so this module never hands a path to astropy:
it reads through a frame its source opened (never through a link, never blocking,
regular files only), at most MAX_HEADER_BLOCKS blocks of 2880 bytes, never
memory-maps and never reads the data, and only then gives the header bytes to
astropy to parse.

It also says whether the file is complete: a FITS header states how many data
bytes follow it (FITS 4.0, section 4.4.1.1), so a file shorter than that is still
arriving, even if its size stopped changing for a moment.
"""

from __future__ import annotations

import errno
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from astropy.io import fits

from seestar_watch.errors import SHARE_ERRNOS, UserError
from seestar_watch.sources import OpenFrame, Stamp

BLOCK = 2880
CARD = 80
MAX_HEADER_BLOCKS = 36  # 1,296 cards; a Seestar sub has 2 blocks
STRIPPED_KEYWORDS = frozenset({"COMMENT", "HISTORY", ""})
VALID_BITPIX = frozenset({8, 16, 32, 64, -32, -64})
COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
}
SIMPLE_PREFIX = b"SIMPLE  = "

Scalar = str | int | float | bool | None


class Status(Enum):
    COMPLETE = "complete"  # header parsed, all the data the header promises is there
    INCOMPLETE = "incomplete"  # still arriving: wait and look again
    INVALID = "invalid"  # not a FITS file we accept; `reason` says why
    GONE = "gone"  # no such file any more
    UNAVAILABLE = "unavailable"  # the share answered with an I/O error: nothing is known


@dataclass(frozen=True)
class HeaderRead:
    status: Status
    reason: str = ""
    cards: dict[str, Scalar] = field(default_factory=dict)
    size: int = 0  # bytes in the file when it was read
    expected_size: int | None = None  # header + padded data, when the header says
    mtime_ns: int | None = None  # the modification time of the version that was read

    @property
    def version(self) -> Stamp | None:
        """The size and time of what was read, when the file could be opened."""
        return None if self.mtime_ns is None else Stamp(self.size, self.mtime_ns)


def read_header(path: str, *, max_blocks: int = MAX_HEADER_BLOCKS) -> HeaderRead:
    """Read and check the primary header of a local file; never raises, blocks or maps it."""
    from seestar_watch.sources.local import LocalFrame  # os only, no watchdog

    return read_header_of(lambda: LocalFrame(path), max_blocks=max_blocks)


def read_header_of(
    opener: Callable[[], OpenFrame], *, max_blocks: int = MAX_HEADER_BLOCKS
) -> HeaderRead:
    """Read and check the primary header of the frame `opener` opens; never raises."""
    try:
        with opener() as frame:
            raw, problem = _read_header_blocks(frame, max_blocks)
            size, mtime_ns = frame.size, frame.mtime_ns
    except OSError as exc:
        return header_error(exc)
    if problem is not None:
        return HeaderRead(problem[0], problem[1], size=size, mtime_ns=mtime_ns)
    return _check_cards(raw, size, mtime_ns)


def header_error(exc: OSError) -> HeaderRead:
    """What an OSError from opening or reading a frame means for it."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return HeaderRead(Status.GONE, "no such file")
    if exc.errno in SHARE_ERRNOS:
        return HeaderRead(Status.UNAVAILABLE, os.strerror(exc.errno or 0))
    if exc.errno == errno.ELOOP:
        return HeaderRead(Status.INVALID, "a symbolic link")
    if exc.errno == errno.EINVAL:
        return HeaderRead(Status.INVALID, "not a regular file")
    return HeaderRead(Status.INVALID, f"cannot read: {exc.strerror}")


def _read_header_blocks(
    frame: OpenFrame, max_blocks: int
) -> tuple[bytes, tuple[Status, str] | None]:
    """Read whole blocks up to the one holding END; (bytes, None) or (b"", (status, reason))."""
    data = bytearray()
    for _ in range(max_blocks):
        block = frame.read(BLOCK)
        data += block
        if len(data) < CARD or (len(data) == len(block) and not _starts_like_fits(data)):
            return b"", _first_card_problem(bytes(data))
        if _end_card_offset(block) is not None:
            return bytes(data), None
        if len(block) < BLOCK:
            return b"", (Status.INCOMPLETE, "header still arriving")
    return b"", (Status.INVALID, f"no END card in the first {max_blocks} header blocks")


def _starts_like_fits(data: bytes | bytearray) -> bool:
    first = bytes(data[:CARD])
    return first.startswith(SIMPLE_PREFIX) and first[10:30].strip() == b"T"


def _first_card_problem(data: bytes) -> tuple[Status, str]:
    if not data:
        return Status.INCOMPLETE, "empty file"
    for magic, kind in COMPRESSION_MAGIC.items():
        if data.startswith(magic):
            return Status.INVALID, f"compressed ({kind}) content is refused"
    if len(data) < CARD and SIMPLE_PREFIX.startswith(data[: len(SIMPLE_PREFIX)]):
        return Status.INCOMPLETE, "header still arriving"
    return Status.INVALID, "not a FITS file (it does not start with SIMPLE = T)"


def _end_card_offset(block: bytes) -> int | None:
    for offset in range(0, len(block) - CARD + 1, CARD):
        if block[offset : offset + 8] == b"END     ":
            return offset
    return None


def _check_cards(raw: bytes, size: int, mtime_ns: int) -> HeaderRead:
    try:
        cards = parse_cards(raw)
        expected = len(raw) + _padded_data_size(cards)
    except Exception as exc:  # astropy raises many types on hostile cards; all mean "invalid"
        return HeaderRead(
            Status.INVALID, str(exc) or type(exc).__name__, size=size, mtime_ns=mtime_ns
        )
    status = Status.COMPLETE if size >= expected else Status.INCOMPLETE
    reason = "" if status is Status.COMPLETE else f"{size} of {expected} bytes"
    return HeaderRead(status, reason, cards, size, expected, mtime_ns)


def _padded_data_size(cards: dict[str, Scalar]) -> int:
    """Bytes of primary data the header promises, padded to whole blocks (FITS 4.4.1.1)."""
    bitpix = cards.get("BITPIX")
    naxis = cards.get("NAXIS")
    if type(bitpix) is not int or bitpix not in VALID_BITPIX:
        raise ValueError(f"BITPIX = {bitpix!r} is not a valid FITS BITPIX")
    if type(naxis) is not int or not 0 <= naxis <= 999:
        raise ValueError(f"NAXIS = {naxis!r} is not a valid FITS NAXIS")
    axes = [_length(cards, f"NAXIS{n}") for n in range(1, naxis + 1)]
    if naxis == 0:
        return 0
    if cards.get("GROUPS") is True and axes[0] == 0:  # random groups (FITS 6)
        elements = _length(cards, "GCOUNT", 1) * (_length(cards, "PCOUNT", 0) + math.prod(axes[1:]))
    else:
        elements = math.prod(axes)
    data_bytes = abs(bitpix) // 8 * elements
    return -(-data_bytes // BLOCK) * BLOCK  # rounded up to whole blocks


def _length(cards: dict[str, Scalar], key: str, default: int | None = None) -> int:
    value = cards.get(key, default)
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} = {value!r} is not a valid length")
    return value


# Fixed-format values (FITS 4.2.1) are parsed here because astropy's per-card
# config lookups cost ~25 us a card (1 ms a Seestar header). Anything this
# pattern does not match exactly (free format, HIERARCH, record-valued
# cards with a ':' in a string, non-printable bytes) goes to astropy's own Card parser, and the
# tests check the result equals astropy.io.fits.getheader on real headers.
_SIMPLE_VALUE = re.compile(
    r" *(?:(?P<bool>[TF])|(?P<int>[+-]?\d+)|(?P<real>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[ED][+-]?\d+)?)"
    r"|'(?P<str>(?:[ -&(-9;-~]|'')*)')"
    r" *(?:/.*)?"
)
_SIMPLE_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8} *")


def parse_cards(raw: bytes) -> dict[str, Scalar]:
    """The header as a flat dict: first value of each keyword, commentary cards dropped."""
    text = raw.decode("ascii", errors="replace")
    if "\ufffd" in text:
        raise ValueError("the header holds bytes that are not ASCII")
    if any(text[i : i + 8] == "CONTINUE" for i in range(0, len(text), CARD)):
        return _parse_with_astropy(text)  # long strings span cards: astropy joins them
    cards: dict[str, Scalar] = {}
    for offset in range(0, len(text), CARD):
        image = text[offset : offset + CARD]
        if image.startswith("END     "):
            break
        keyword = image[:8].rstrip()
        if keyword in STRIPPED_KEYWORDS:
            continue
        key, value = _parse_card(image)
        if key not in STRIPPED_KEYWORDS:
            cards.setdefault(key, value)
    return cards


def _parse_card(image: str) -> tuple[str, Scalar]:
    if image[8:10] == "= " and _SIMPLE_KEYWORD.fullmatch(image[:8]):
        match = _SIMPLE_VALUE.fullmatch(image, 10)
        if match is not None:
            return image[:8].rstrip(), _simple_value(match)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns on non-standard cards it can still read
        card = fits.Card.fromstring(image)
        return card.keyword, _plain(card.value)


def _simple_value(match: re.Match[str]) -> Scalar:
    if match["bool"] is not None:
        return match["bool"] == "T"
    if match["int"] is not None:
        return int(match["int"])
    if match["real"] is not None:
        return float(match["real"].replace("D", "E"))
    return match["str"].replace("''", "'").rstrip()


def _parse_with_astropy(text: str) -> dict[str, Scalar]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.Header.fromstring(text)
        cards: dict[str, Scalar] = {}
        for card in header.cards:
            if card.keyword not in STRIPPED_KEYWORDS:
                cards.setdefault(card.keyword, _plain(card.value))
        return cards


def _plain(value: Any) -> Scalar:
    """astropy's value types as plain JSON-friendly Python ones."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, fits.card.Undefined):
        return None
    return str(value)


# -- the whole frame, for the stages that measure it (quicklook, photometry) --------------


class UnusableFrame(UserError):
    """The file cannot be measured (not a complete 2-D FITS image). Its exit code is
    EX_DATAERR (65): under the daemon the frame is rejected at once, not tried again."""

    exit_code = 65


def read_frame(path: str | os.PathLike[str]) -> tuple[np.ndarray, fits.Header]:
    """The image (float64) and primary header of a complete FITS frame; UnusableFrame says,
    in one line, why a file is not one (checked by our own header reader first, not
    astropy's messages)."""
    checked = read_header(os.fspath(path))
    if checked.status is Status.INCOMPLETE:
        raise UnusableFrame(f"cannot read {path}: truncated ({checked.reason})")
    if checked.status is not Status.COMPLETE:
        raise UnusableFrame(f"cannot read {path}: {checked.reason}")
    try:
        with warnings.catch_warnings(), fits.open(path, memmap=False) as hdus:
            warnings.simplefilter("ignore")  # a Seestar's header is not astropy's business
            hdu = hdus[0]
            data, header = hdu.data, hdu.header.copy()
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnusableFrame(f"cannot read {path}: {reason}") from None
    if data is None or data.ndim != 2 or min(data.shape) < 16:
        raise UnusableFrame(f"{path} is not a 2-D image (shape {getattr(data, 'shape', None)})")
    return np.asarray(data, dtype=np.float64), header
