"""Synthetic Seestar S50 sub-frames: real header keywords, a raw GRBG star field of known stars.

Used by `seestar-watch demo` to play a telescope, and by the tests and benchmarks
as frames whose answers are known (star positions, fluxes and widths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from astropy.io import fits

WIDTH, HEIGHT = 1080, 1920  # NAXIS1, NAXIS2 of an S50 sub
FOCAL_LENGTH_MM = 250
PIXEL_SIZE_UM = 2.9


@dataclass(frozen=True)
class Star:
    x: float  # raw pixel column (0-based, centre of the star)
    y: float  # raw pixel row
    flux: float  # total ADU above background
    fwhm: float  # raw pixels


@dataclass(frozen=True)
class Sky:
    background: float = 1200.0  # ADU
    noise: float = 12.0  # ADU, Gaussian, per raw pixel
    stars: list[Star] = field(default_factory=list)
    seed: int = 0


def header(
    target: str = "M 42",
    exposure: float = 10.0,
    when: datetime | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> fits.Header:
    """The primary header of an S50 raw sub (firmware 4.x keywords, in its order)."""
    when = when or datetime.now(UTC)
    cards = [
        ("BZERO", 32768, "offset data range to that of unsigned short"),
        ("BSCALE", 1, "default scaling factor"),
        ("CREATOR", "ZWO Seestar S50", "Capture software"),
        ("PRODUCER", "ZWO", "Powered by ZWO"),
        ("XORGSUBF", 0, "Subframe X position in binned pixels"),
        ("YORGSUBF", 0, "Subframe Y position in binned pixels"),
        ("FOCALLEN", FOCAL_LENGTH_MM, "Focal length of telescope in mm"),
        ("APERTURE", 5.0, "Name of field of view aperture"),
        ("PROGRAM", "4.27", "The name of the software task"),
        ("XBINNING", 1, "Camera X Bin"),
        ("YBINNING", 1, "Camera Y Bin"),
        ("XPIXSZ", PIXEL_SIZE_UM, "pixel size in microns (with binning)"),
        ("YPIXSZ", PIXEL_SIZE_UM, "pixel size in microns (with binning)"),
        ("IMAGETYP", "Light", "Type of image"),
        ("EXPOSURE", exposure, "Exposure time in seconds"),
        ("EXPTIME", exposure, "Exposure time in seconds"),
        ("CCD-TEMP", 25.0, "sensor temperature in C"),
        ("RA", 83.82208, "Object Right Ascension in degrees"),
        ("DEC", -5.39111, "Object Declination in degrees"),
        ("DATE-OBS", when.strftime("%Y-%m-%dT%H:%M:%S.%f"), "Image created time"),
        ("FILTER", "IRCUT", "Filter used when taking image"),
        ("INSTRUME", "Seestar S50", "Camera model"),
        ("BAYERPAT", "GRBG", "Bayer pattern"),
        ("GAIN", 80, "Gain Value"),
        ("TELESCOP", "S50_demo", "Telescope name"),
        ("OBJECT", target, "name or catalog number of object being imaged"),
        ("TOTALEXP", exposure, "Total Exposure Time in seconds"),
    ]
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = 16
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = width
    hdr["NAXIS2"] = height
    hdr["EXTEND"] = True
    for key, value, comment in cards:
        hdr[key] = (value, comment)
    return hdr


def render(sky: Sky, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A raw frame (uint16) with the sky's stars as pixel-integrated Gaussians plus noise.

    The stars are grey: every Bayer channel sees the same light, so summing each 2x2
    GRBG cell gives back the star's flux.
    """
    rng = np.random.default_rng(sky.seed)
    image = rng.normal(sky.background, sky.noise, size=(height, width))
    for star in sky.stars:
        _add_star(image, star)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _add_star(image: np.ndarray, star: Star) -> None:
    sigma = star.fwhm / (2 * math.sqrt(2 * math.log(2)))
    radius = math.ceil(6 * sigma) + 1
    x0, x1 = max(0, int(star.x) - radius), min(image.shape[1], int(star.x) + radius + 2)
    y0, y1 = max(0, int(star.y) - radius), min(image.shape[0], int(star.y) + radius + 2)
    if x0 >= x1 or y0 >= y1:
        return  # off the frame
    edges_x = np.arange(x0, x1 + 1) - 0.5 - star.x
    edges_y = np.arange(y0, y1 + 1) - 0.5 - star.y
    # integrate the Gaussian over each pixel: differences of the normal CDF at the edges
    cdf_x = 0.5 * (1 + _erf(edges_x / (sigma * math.sqrt(2))))
    cdf_y = 0.5 * (1 + _erf(edges_y / (sigma * math.sqrt(2))))
    image[y0:y1, x0:x1] += star.flux * np.outer(np.diff(cdf_y), np.diff(cdf_x))


def _erf(values: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(values)


def star_field(
    count: int = 40,
    *,
    seed: int = 1,
    fwhm: float = 4.0,
    margin: int = 60,
    width: int = WIDTH,
    height: int = HEIGHT,
    target_flux: float = 400_000.0,
    target_alone: float = 180.0,
) -> list[Star]:
    """Well separated stars of assorted brightness, with a bright 'target' at the centre,
    alone within `target_alone` pixels (where quicklook looks for the target)."""
    rng = np.random.default_rng(seed)
    target = Star(width / 2 - 0.5, height / 2 - 0.5, target_flux, fwhm)
    stars = [target]
    while len(stars) < count:
        x = float(rng.uniform(margin, width - margin))
        y = float(rng.uniform(margin, height - margin))
        if math.hypot(x - target.x, y - target.y) <= target_alone:
            continue
        if all(math.hypot(x - s.x, y - s.y) > 40 for s in stars):
            stars.append(Star(x, y, float(rng.uniform(30_000, 300_000)), fwhm))
    return stars


def frame_bytes(
    sky: Sky, hdr: fits.Header | None = None, width: int = WIDTH, height: int = HEIGHT
) -> bytes:
    """A complete FITS file as bytes (BZERO 32768 unsigned 16-bit, as the scope writes it)."""
    hdr = hdr if hdr is not None else header(width=width, height=height)
    raw = hdr.tostring().encode("ascii")
    data = render(sky, width, height)
    payload = (data.astype(np.int32) - 32768).astype(">i2").tobytes()
    payload += bytes(-len(payload) % 2880)
    return raw + payload


# -- a photometric field: stars on the sky, a WCS, photon and read noise ------------------

ZERO_POINT = 20.5  # mag of a star giving 1 ADU/s over all four pixels of its cells (an S50's)


@dataclass(frozen=True)
class SkyStar:
    ra: float  # degrees
    dec: float
    mag: float  # the magnitude every Bayer channel sees (a grey star)


@dataclass(frozen=True)
class Field:
    """A frame of known stars on the sky: where it points, its sensor and its sky."""

    ra: float  # the field's centre, degrees
    dec: float
    stars: tuple[SkyStar, ...]
    exposure: float = 10.0
    gain: float = 1.0  # e-/ADU: the photon noise
    read_noise: float = 3.0  # e- per raw pixel
    background: float = 900.0  # ADU per raw pixel
    fwhm: float = 3.8  # raw pixels (~9")
    rotation: float = 0.0  # degrees
    with_wcs: bool = True  # write the WCS into the header (no solve needed)
    hot_pixels: tuple[tuple[int, int, int], ...] = ()  # (column, row, ADU): one pixel each
    seed: int = 0


def field_wcs(pointing: Field) -> dict[str, object]:
    """The TAN WCS keywords of an S50 frame centred on the field (raw pixels, FITS 1-based)."""
    scale = PIXEL_SIZE_UM * 1e-3 / FOCAL_LENGTH_MM * 206_264.806 / 3600  # degrees per pixel
    angle = math.radians(pointing.rotation)
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": pointing.ra, "CRVAL2": pointing.dec,
        "CRPIX1": WIDTH / 2 + 0.5, "CRPIX2": HEIGHT / 2 + 0.5,
        "CD1_1": -scale * math.cos(angle), "CD1_2": scale * math.sin(angle),
        "CD2_1": scale * math.sin(angle), "CD2_2": scale * math.cos(angle),
        "EQUINOX": 2000.0, "RADESYS": "ICRS",
    }  # fmt: skip


def field_frame(pointing: Field, when: datetime | None = None, target: str = "V* TEST") -> bytes:
    """A complete S50 raw sub of `pointing`'s stars, as bytes: Poisson photon noise at the
    gain, read noise, a flat sky, saturation at the ADC's 65535; the WCS in the header
    unless `with_wcs` is False (then only RA/DEC hint where it points, as a Seestar's)."""
    from astropy.wcs import WCS

    keywords = field_wcs(pointing)
    wcs = WCS(keywords)
    rng = np.random.default_rng(pointing.seed)
    image = np.full((HEIGHT, WIDTH), pointing.background, dtype=np.float64)
    for sky_star in pointing.stars:
        x, y = wcs.world_to_pixel_values(sky_star.ra, sky_star.dec)
        flux = 10 ** (-0.4 * (sky_star.mag - ZERO_POINT)) * pointing.exposure
        _add_star(image, Star(float(x), float(y), flux, pointing.fwhm))
    electrons = rng.poisson(np.clip(image, 0, None) * pointing.gain).astype(np.float64)
    electrons += rng.normal(0, pointing.read_noise, size=image.shape)
    data = np.clip(np.rint(electrons / pointing.gain), 0, 65535).astype(np.int32)
    for column, row, value in pointing.hot_pixels:
        data[row, column] = value
    hdr = header(target, pointing.exposure, when)
    hdr["RA"], hdr["DEC"] = pointing.ra, pointing.dec
    hdr["SITELAT"], hdr["SITELONG"] = 44.633, 4.38333
    if pointing.with_wcs:
        for key, keyword in keywords.items():
            hdr[key] = keyword
    payload = (data - 32768).astype(">i2").tobytes()
    return hdr.tostring().encode("ascii") + payload + bytes(-len(payload) % 2880)
