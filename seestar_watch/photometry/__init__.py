"""Photometry an observer can submit: the `seestar-watch photometry FRAME` stage.

A frame's path through it, one module a step:

    solve.py      where the frame points (its WCS): solved offline, or the header's own
    catalogue.py  the stars around it: comparison stars from a file, or Tycho-2 from the index
    measure.py    the green plane of the raw mosaic, apertures, sky, saturation, FWHM
    ensemble.py   the zero point of the comparison stars, the target's magnitude, its error
    sky.py        mid-exposure JD, HJD and BJD_TDB, altitude and airmass, all offline
    stage.py      the whole stage: one frame in, one result object out
    aavso.py      the AAVSO Extended File Format, for `export --aavso`

Everything here works on the archived copy and never writes to it, and nothing here
reaches the network.
"""
