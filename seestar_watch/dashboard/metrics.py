"""`/metrics` in the Prometheus text format, with prometheus-client.

Every value is read from the ledger at scrape time (a custom collector), so the
figures are the same from the daemon and from `seestar-watch dashboard`, and a
restart does not reset them: frames by state, pending, the pipeline's run times
as a histogram, the last frame's time, and whether the share is up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from seestar_watch.history import History
from seestar_watch.ledger import Ledger

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds: a quicklook run takes ~1 s on a Pi, a plate solve tens of seconds
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class LedgerCollector:
    def __init__(self, ledger: Ledger, daemon_view: Callable[[], dict[str, Any]]) -> None:
        self.history = History(ledger)
        self.daemon_view = daemon_view

    def collect(self) -> Iterator[Metric]:
        counts = self.history.counts()
        frames = GaugeMetricFamily(
            "seestar_watch_frames", "Frames in the ledger, by state.", labels=["state"]
        )
        for state, count in counts.items():
            frames.add_metric([state], count)
        yield frames
        yield GaugeMetricFamily(
            "seestar_watch_pending", "Frames waiting for the pipeline.", value=counts["pending"]
        )
        below, count, total = self.history.duration_counts(DURATION_BUCKETS)
        yield HistogramMetricFamily(
            "seestar_watch_pipeline_duration_seconds",
            "How long the pipeline command ran, per run that has a duration.",
            buckets=[
                *(
                    (floatToGoString(bound), n)  # type: ignore[no-untyped-call]  # "1.0", as its Histogram
                    for bound, n in zip(DURATION_BUCKETS, below, strict=True)
                ),
                ("+Inf", count),
            ],
            sum_value=total,
        )
        if (last := self.history.last_change()) is not None:
            yield GaugeMetricFamily(
                "seestar_watch_last_frame_timestamp_seconds",
                "When a frame was last recorded or changed state (unix time).",
                value=last,
            )
        view = self.daemon_view()
        if view.get("share") in ("up", "down"):  # unknown: no daemon to ask, no sample
            yield GaugeMetricFamily(
                "seestar_watch_share_up",
                "1 when the daemon can read the share, 0 when it cannot.",
                value=1 if view["share"] == "up" else 0,
            )
        yield GaugeMetricFamily(
            "seestar_watch_daemon_running",
            "1 while a seestar-watch daemon works on this ledger.",
            value=1 if view.get("running") else 0,
        )


def metrics_text(collector: LedgerCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
