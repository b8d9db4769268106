"""The config file: found, parsed with yaml.safe_load, and validated all at once.

Every problem is reported with its key path and what was expected, so one run of
`check-config` shows everything that needs fixing. The sections are frozen
dataclasses whose fields carry their own check; a key that is not a field is an
error with the closest valid name suggested.

One job a module: `checks.py` (what a value may be), `smburl.py` (the smb:// address),
`sections.py` (the sections and their fields), `parse.py` (a document made into a Config),
`yamlfile.py` (finding and safely reading the file), `summary.py` (what check-config says).
The names the rest of the package uses are here.
"""

from seestar_watch.config.checks import ObserverKind
from seestar_watch.config.parse import parse_config
from seestar_watch.config.sections import (
    DEFAULT_LISTEN,
    SECTIONS,
    AlertsConfig,
    ArchiveConfig,
    Config,
    DashboardConfig,
    Listen,
    LoggingConfig,
    PhotometryConfig,
    PipelineConfig,
    ResultLimit,
    StateConfig,
    Target,
    WatcherConfig,
    parse_listen,
    parse_position,
)
from seestar_watch.config.summary import describe, url_host
from seestar_watch.config.yamlfile import (
    CONFIG_ENV,
    CONFIG_NAME,
    find_config_file,
    load_config,
    parse_yaml,
)
from seestar_watch.errors import ConfigError  # raised by the loading, as it always was
from seestar_watch.sources.smburl import SMB_SCHEME, SmbUrl, parse_smb_url  # read here, kept there

__all__ = [
    "CONFIG_ENV",
    "CONFIG_NAME",
    "DEFAULT_LISTEN",
    "SECTIONS",
    "SMB_SCHEME",
    "AlertsConfig",
    "ArchiveConfig",
    "Config",
    "ConfigError",
    "DashboardConfig",
    "Listen",
    "LoggingConfig",
    "ObserverKind",
    "PhotometryConfig",
    "PipelineConfig",
    "ResultLimit",
    "SmbUrl",
    "StateConfig",
    "Target",
    "WatcherConfig",
    "describe",
    "find_config_file",
    "load_config",
    "parse_config",
    "parse_listen",
    "parse_position",
    "parse_smb_url",
    "parse_yaml",
    "url_host",
]  # fmt: skip
