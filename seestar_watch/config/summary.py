"""What `check-config` says of a config, for people: one line per part, no secret."""

from __future__ import annotations

import shlex

from seestar_watch.config.sections import AlertsConfig, Config, WatcherConfig
from seestar_watch.sources.smburl import SmbUrl


def _alerts_summary(alerts: AlertsConfig) -> str:
    from seestar_watch.log import count_of

    if not alerts.urls:
        return "off (no alerts.urls)"
    limits = "; ".join(f"{name} {limit}" for name, limit in alerts.results.items())
    return (
        f"{count_of(len(alerts.urls), 'URL')}; share lost after {alerts.share_lost_after:g} s,"
        f" failures gathered per {alerts.min_interval:g} s, stall after"
        f" {alerts.stalled_after:g} s"
        + (f", results: {limits} ({alerts.results_frames} in a row)" if limits else "")
        + (f", summary at {alerts.summary_at}" if alerts.summary_at else "")
    )


def url_host(host: str) -> str:
    """A host as it goes in a URL: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def _share_line(watcher: WatcherConfig) -> str:
    if isinstance(watcher.watch_path, SmbUrl):
        return "share: read over SMB directly, no mount (check-mount walks every step)"
    if watcher.mount_point:
        return f"share: mounted at {watcher.mount_point} (watched only while mounted)"
    return "share: no mount_point set (an unmounted share's empty folder cannot be told apart)"


def describe(config: Config) -> list[str]:
    """A short human summary, for check-config."""
    from seestar_watch.log import count_of

    watcher, pipeline = config.image_watcher, config.pipeline
    archive = f"copies in {config.archive.folder}" if config.archive.enabled else "off"
    rescan = f"every {watcher.rescan_interval:g} s" if watcher.rescan_interval else "off"
    return [
        f"config: {config.source}",
        f"watch: {watcher.watch_path} ({'recursive' if watcher.recursive else 'this folder only'}"
        f", {'enabled' if watcher.enabled else 'DISABLED'})",
        f"settle: {watcher.debounce_delay:g} s quiet; observer {watcher.observer}"
        f" (polling every {watcher.poll_interval:g} s when it polls); rescans {rescan}",
        f"ignore: {', '.join(watcher.ignore) or 'nothing'}",
        _share_line(watcher),
        f"pipeline: {shlex.join(pipeline.command)}",
        f"  timeout {pipeline.timeout:g} s, {count_of(pipeline.retries, 'retry', 'retries')}"
        f" ({pipeline.retry_delay:g} s apart, growing), {count_of(pipeline.workers, 'worker')}",
        f"archive: {archive}",
        "dashboard: "
        + (
            f"http://{url_host(config.dashboard.listen[0])}:{config.dashboard.listen[1]}/"
            if config.dashboard.listen
            else "off"
        ),
        "alerts: " + _alerts_summary(config.alerts),
        f"ledger: {config.state.ledger}"
        + (
            " (existing frames are processed on first start)"
            if config.state.process_existing
            else ""
        ),
    ]
