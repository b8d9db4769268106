"""Safe header reading: astropy's answers on real frames; no hang or crash on hostile ones."""

from __future__ import annotations

import gzip
import os
import random
import time
from pathlib import Path

import pytest
from astropy.io import fits

from seestar_watch.fitsheader import MAX_HEADER_BLOCKS, Status, read_header
from tests.conftest import (
    BLOCK,
    REAL_HEADERS,
    SEESTAR_FRAME_BYTES,
    frame_bytes,
    real_header,
    set_card,
    small_header,
)


def astropy_flat(path: Path) -> dict[str, object]:
    header = fits.getheader(path)
    flat: dict[str, object] = {}
    for key in header:
        if key not in ("COMMENT", "HISTORY", ""):
            flat.setdefault(key, header[key])
    return flat


@pytest.mark.parametrize("name", REAL_HEADERS)
def test_real_frames_match_astropy_getheader_key_value_and_type(tmp_path: Path, name: str) -> None:
    path = tmp_path / "frame.fit"
    path.write_bytes(frame_bytes(real_header(name)))
    assert path.stat().st_size == SEESTAR_FRAME_BYTES

    result = read_header(path)

    assert result.status is Status.COMPLETE
    assert result.expected_size == SEESTAR_FRAME_BYTES
    expected = astropy_flat(path)
    assert list(result.cards) == list(expected)
    for key, value in expected.items():
        assert result.cards[key] == value and type(result.cards[key]) is type(value), key


def test_commentary_cards_are_stripped_and_values_typed(tmp_path: Path) -> None:
    path = tmp_path / "frame.fit"
    path.write_bytes(frame_bytes(real_header("s50_fw276_wcs_ngc7023.hdr")))

    cards = read_header(path).cards

    assert "COMMENT" not in cards and "HISTORY" not in cards and "" not in cards
    assert cards["OBJECT"] == "NGC 7023"  # trailing blanks of the string value removed
    assert cards["PRODUCER"] == "ZWO"
    assert cards["NAXIS1"] == 1080 and type(cards["NAXIS1"]) is int
    assert cards["EXPTIME"] == 10.0 and type(cards["EXPTIME"]) is float
    assert cards["SIMPLE"] is True
    assert cards["ASTAP_ZEMOSAIC_SOLVED"] is True  # a HIERARCH card


def header_from_cards(cards: list[str]) -> bytes:
    text = "".join(card.ljust(80) for card in [*cards, "END"])
    return text.encode().ljust(-(-len(text) // BLOCK) * BLOCK, b" ")


def test_free_format_continue_and_duplicate_cards_match_astropy(tmp_path: Path) -> None:
    header = header_from_cards(
        [
            "SIMPLE  =                    T",
            "BITPIX  =                    8",
            "NAXIS   =                    0",
            "OBJECT  = 'first'",
            "OBJECT  = 'second'",
            "LONGSTR = 'a long string that goes on&'",
            "CONTINUE  ' and on'",
            "RATIO   = 1.5D3 / a D exponent",
            "FREE    =    -.25e+2",
            "QUOTE   = 'it''s'",
            "EMPTY   = ''",
            "UNDEF   =",
            "CPLX    = (1.0, 2.0)",
            "DP1     = 'AXIS.1: 1'",
            "lower   = 3",
            "HISTORY made by a test",
            "        blank keyword card",
        ]
    )
    path = tmp_path / "odd.fits"
    path.write_bytes(header)

    result = read_header(path)

    assert result.status is Status.COMPLETE
    expected = astropy_flat(path)
    assert result.cards["OBJECT"] == "first"
    assert result.cards["LONGSTR"] == "a long string that goes on and on"
    assert result.cards["UNDEF"] is None
    assert result.cards["CPLX"] == "(1+2j)"
    for key, value in expected.items():
        if key == "UNDEF":
            continue
        if key == "CPLX":
            continue
        assert result.cards[key] == value and type(result.cards[key]) is type(value), key


def test_fixed_format_fast_path_agrees_with_astropy_card_by_card(tmp_path: Path) -> None:
    values = [
        "T",
        "F",
        "0",
        "-7",
        "+42",
        "5.",
        "-0.5",
        ".5",
        "1E5",
        "2.5D-3",
        "1E999",
        "'x'",
        "'  lead'",
        "'trail   '",
        "'a''b'",
        "''",
        "'with / slash'",
    ]
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
    ]
    cards += [f"KEY{i:<5}= {value:>20} / comment {i}" for i, value in enumerate(values)]
    path = tmp_path / "values.fits"
    path.write_bytes(header_from_cards(cards))

    result = read_header(path)

    expected = astropy_flat(path)
    assert result.cards.keys() == expected.keys()
    for key, value in expected.items():
        assert result.cards[key] == value and type(result.cards[key]) is type(value), key


def test_data_shorter_than_the_header_promises_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "half.fit"
    whole = frame_bytes()
    path.write_bytes(whole[: len(whole) // 2])

    result = read_header(path)

    assert result.status is Status.INCOMPLETE
    assert result.expected_size == SEESTAR_FRAME_BYTES
    assert result.cards["OBJECT"] == "M 94"


@pytest.mark.parametrize("length", [0, 40, 80, 2880, 5000])
def test_header_still_arriving_is_incomplete(tmp_path: Path, length: int) -> None:
    path = tmp_path / "early.fit"
    path.write_bytes(frame_bytes()[:length])
    assert read_header(path).status is Status.INCOMPLETE


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello, this is text\n" * 200, "not a FITS file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(4000), "not a FITS file"),
        (bytes(10_000), "not a FITS file"),
        (b"SIMPLE  =                    F" + b" " * 5000, "not a FITS file"),
    ],
)
def test_files_that_are_not_fits_are_invalid(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    result = read_header(path)
    assert result.status is Status.INVALID
    assert reason in result.reason
    assert result.cards == {}


def test_gzip_payload_named_fits_is_refused_without_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.fits"
    path.write_bytes(gzip.compress(frame_bytes() + bytes(50_000_000)))
    result = read_header(path)
    assert result.status is Status.INVALID
    assert "gzip" in result.reason


def test_header_without_end_stops_after_a_bounded_number_of_blocks(tmp_path: Path) -> None:
    path = tmp_path / "endless.fits"
    first = real_header()[:80]
    with path.open("wb") as out:
        out.write(first)
        out.truncate(200_000_000)  # a sparse file of 200 MB of zeros after the first card
    result = read_header(path)
    assert result.status is Status.INVALID
    assert f"no END card in the first {MAX_HEADER_BLOCKS} header blocks" in result.reason


def test_header_of_blanks_without_end_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "blanks.fits"
    path.write_bytes(real_header()[:80] + b" " * (BLOCK * (MAX_HEADER_BLOCKS + 5)))
    result = read_header(path)
    assert result.status is Status.INVALID
    assert "END" in result.reason


@pytest.mark.parametrize(
    ("keyword", "value", "status"),
    [
        ("NAXIS1", "1000000000000", Status.INCOMPLETE),  # absurd, but only ever "not yet there"
        ("NAXIS1", "-5", Status.INVALID),
        ("BITPIX", "17", Status.INVALID),
        ("NAXIS", "-1", Status.INVALID),
        ("NAXIS2", "'many'", Status.INVALID),
    ],
)
def test_absurd_axes_never_allocate_or_crash(
    tmp_path: Path, keyword: str, value: str, status: Status
) -> None:
    path = tmp_path / "axes.fits"
    path.write_bytes(set_card(small_header(), keyword, value) + bytes(BLOCK))
    assert read_header(path).status is status


def test_extensions_after_the_primary_hdu_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data=None)]).writeto(path)
    assert read_header(path).status is Status.COMPLETE


def test_garbage_values_never_raise(tmp_path: Path) -> None:
    header = set_card(small_header(), "EXPTIME", "1e999")
    header = set_card(header, "GAIN", "NaN")
    path = tmp_path / "garbage.fits"
    path.write_bytes(header + bytes(BLOCK))
    result = read_header(path)
    assert result.status in (Status.COMPLETE, Status.INVALID)


def test_non_ascii_bytes_in_a_card_make_the_header_invalid(tmp_path: Path) -> None:
    header = small_header().replace(b"'M 94    '", b"'M\xe9\x01 94  '")
    path = tmp_path / "bytes.fits"
    path.write_bytes(header + bytes(BLOCK))
    result = read_header(path)
    assert result.status is Status.INVALID
    assert result.cards == {}


def test_random_corruption_of_a_real_header_never_raises(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    base = bytearray(frame_bytes(small_header()))
    path = tmp_path / "fuzz.fits"
    for _ in range(300):
        mutated = bytearray(base)
        for _ in range(rng.randint(1, 12)):
            mutated[rng.randrange(5760)] = rng.randrange(256)
        path.write_bytes(bytes(mutated[: rng.choice([len(mutated), rng.randrange(len(mutated))])]))
        assert read_header(path).status in set(Status)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.fits"
    os.mkfifo(path)
    started = time.monotonic()
    result = read_header(path)
    assert result.status is Status.INVALID
    assert "regular" in result.reason
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("target", ["/dev/zero", "secret.txt"])
def test_a_symlink_is_never_followed(tmp_path: Path, target: str) -> None:
    (tmp_path / "secret.txt").write_bytes(frame_bytes())
    link = tmp_path / "link.fits"
    link.symlink_to(target if target.startswith("/") else tmp_path / target)
    result = read_header(link)
    assert result.status is Status.INVALID
    assert result.cards == {}


def test_missing_file_is_gone(tmp_path: Path) -> None:
    assert read_header(tmp_path / "nothing.fits").status is Status.GONE


def test_unreadable_file_is_invalid_not_an_exception(tmp_path: Path) -> None:
    folder = tmp_path / "dir.fits"
    folder.mkdir()
    result = read_header(folder)
    assert result.status is Status.INVALID
