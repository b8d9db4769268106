"""When and how high: mid-exposure JD, HJD and BJD_TDB, altitude and airmass, offline.

DATE-OBS is the start of a Seestar sub, in UTC: the mid-exposure time is DATE-OBS plus
EXPTIME / 2. HJD (in UTC, as the AAVSO takes it) and BJD_TDB move it to the Sun's and the
solar system's barycentre for the target's direction, with astropy's built-in ephemeris;
the altitude and the airmass (Pickering 2002, good to the horizon) come from the site's
latitude and longitude. Nothing here reaches the network, and no Earth orientation table
is read (parsing astropy's takes a second a frame): UT1 is taken as UTC and the pole as
still, which is under 1 s and 1 arcsec: 0.001 in an airmass at 10 degrees, and nothing
in a light time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import astropy.units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.table import QTable
from astropy.time import Time
from astropy.utils import iers

iers.conf.auto_download = False  # a dark site has no network
iers.conf.auto_max_age = None
STILL_EARTH = iers.IERS(
    QTable(
        {
            "MJD": [0.0, 200_000.0] * u.d,  # 1858 to 2406
            "UT1_UTC": [0.0, 0.0] * u.s,
            "PM_x": [0.0, 0.0] * u.arcsec,
            "PM_y": [0.0, 0.0] * u.arcsec,
        }
    )
)


@dataclass(frozen=True)
class Moment:
    jd: float  # mid-exposure, UTC
    hjd: float
    bjd_tdb: float
    altitude: float | None  # degrees (None: no site)
    airmass: float | None  # None: no site, or below the horizon


def moment(
    date_obs: str,
    exposure: float,
    ra: float,
    dec: float,
    site: tuple[float, float, float] | None,
) -> Moment:
    """The frame's mid-exposure times for a target at (ra, dec), and its altitude and
    airmass from `site` (latitude, longitude east, metres). ValueError for a bad date."""
    with warnings.catch_warnings(), iers.earth_orientation_table.set(STILL_EARTH):
        warnings.simplefilter("ignore")  # ERFA's "dubious year"
        middle = Time(date_obs.strip(), format="isot", scale="utc") + exposure / 2 * u.s
        target = SkyCoord(ra * u.deg, dec * u.deg)
        place = (
            None
            if site is None
            else EarthLocation.from_geodetic(site[1] * u.deg, site[0] * u.deg, site[2] * u.m)
        )
        # the light-travel times need a place on Earth; its centre is within 21 ms of any
        anywhere = EarthLocation.from_geocentric(0, 0, 0, unit=u.m) if place is None else place
        helio = middle.light_travel_time(target, "heliocentric", location=anywhere)
        bary = middle.light_travel_time(target, "barycentric", location=anywhere)
        altitude = None
        if place is not None:
            seen = target.transform_to(AltAz(obstime=middle, location=place))
            altitude = float(seen.alt.deg)
        return Moment(
            float(middle.utc.jd),
            float((middle.utc + helio).jd),
            float((middle.tdb + bary).jd),
            altitude,
            airmass(altitude),
        )


def airmass(altitude: float | None) -> float | None:
    """Pickering's (2002) airmass, to the horizon, for a geometric altitude in degrees
    (his formula takes the apparent one: Saemundsson's refraction is added first)."""
    if altitude is None or altitude <= 0:
        return None
    apparent = altitude + 1.02 / math.tan(math.radians(altitude + 10.3 / (altitude + 5.11))) / 60
    return 1 / math.sin(math.radians(apparent + 244 / (165 + 47 * apparent**1.1)))


def site_of(header: dict[str, object]) -> tuple[float, float, float] | None:
    """(latitude, longitude east, metres) from SITELAT/SITELONG (and SITEELEV)."""
    lat, lon = header.get("SITELAT"), header.get("SITELONG")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    if not (-90 <= lat <= 90 and -360 <= lon <= 360) or (lat, lon) == (0, 0):
        return None  # a scope that never had a position: 0, 0 is the Gulf of Guinea
    height = header.get("SITEELEV")
    return float(lat), float(lon), float(height) if isinstance(height, int | float) else 0.0
