"""`/metrics` in the Prometheus text format, with prometheus-client.

Every value is read from the ledger at scrape time (a custom collector), so the
figures are the same from the daemon and from `seestar-watch dashboard`, and a
restart does not reset them: frames by state, pending, the pipeline's run times
as a histogram, the last frame's time, and whether the share is up; each sample with
the `scope` label of its telescope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Scoped:
    """One telescope's ledger and daemon, as /metrics reads them."""

    scope: str  # the `scope` label of its samples
    ledger: Ledger
    daemon_view: Callable[[], dict[str, Any]]


class LedgerCollector:
    """Every telescope's figures under one name each, told apart by the `scope` label (one
    daemon's page has one scope; `dashboard -c a.yaml -c b.yaml` has several)."""

    def __init__(self, scopes: list[Scoped]) -> None:
        self.scopes = [
            (scoped.scope, History(scoped.ledger), scoped.daemon_view) for scoped in scopes
        ]

    def collect(self) -> Iterator[Metric]:
        frames = GaugeMetricFamily(
            "seestar_watch_frames", "Frames in the ledger, by state.", labels=["scope", "state"]
        )
        pending = _gauge("seestar_watch_pending", "Frames waiting for the pipeline.")
        durations = HistogramMetricFamily(
            "seestar_watch_pipeline_duration_seconds",
            "How long the pipeline command ran, per run that has a duration.",
            labels=["scope"],
        )
        last_frame = _gauge(
            "seestar_watch_last_frame_timestamp_seconds",
            "When a frame was last recorded or changed state (unix time).",
        )
        share_up = _gauge(
            "seestar_watch_share_up", "1 when the daemon can read the share, 0 when it cannot."
        )
        running = _gauge(
            "seestar_watch_daemon_running", "1 while a seestar-watch daemon works on this ledger."
        )
        for scope, history, daemon_view in self.scopes:
            counts = history.counts()
            for state, count in counts.items():
                frames.add_metric([scope, state], count)
            pending.add_metric([scope], counts["pending"])
            below, count, total = history.duration_counts(DURATION_BUCKETS)
            durations.add_metric(
                [scope],
                buckets=[
                    *(
                        (floatToGoString(bound), n)  # type: ignore[no-untyped-call]  # "1.0", as its Histogram
                        for bound, n in zip(DURATION_BUCKETS, below, strict=True)
                    ),
                    ("+Inf", count),
                ],
                sum_value=total,
            )
            if (last := history.last_change()) is not None:
                last_frame.add_metric([scope], last)
            view = daemon_view()
            if view.get("share") in ("up", "down"):  # unknown: no daemon to ask, no sample
                share_up.add_metric([scope], 1 if view["share"] == "up" else 0)
            running.add_metric([scope], 1 if view.get("running") else 0)
        yield from (frames, pending, durations, last_frame, share_up, running)


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["scope"])


def metrics_text(collector: LedgerCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
