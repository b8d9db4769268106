"""The dashboard: the night at a glance in a browser, and metrics for Prometheus.

Read-only, served by the daemon (`dashboard.listen`) or by `seestar-watch dashboard`
from the ledger alone. `overview` builds the JSON, `metrics` the Prometheus text,
`server` serves both with the page in `static/`.
"""
