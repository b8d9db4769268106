"""seestar-watch: run a command once for every frame a ZWO Seestar writes to its share.

`ImageWatcher` is imported lazily so that the command line (and `--help`) does not
pay for watchdog and astropy until it needs them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seestar_watch.watcher import ImageWatcher

try:
    __version__ = version("seestar-watch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["ImageWatcher", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "ImageWatcher":
        from seestar_watch.watcher import ImageWatcher

        return ImageWatcher
    raise AttributeError(f"module 'seestar_watch' has no attribute {name!r}")
