"""The command line: parse options, build objects, call one function, map errors to exit codes.

Heavy modules (watchdog, astropy, numpy) are imported inside the commands that
need them, so `seestar-watch --help` answers in a fraction of a second.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from seestar_watch import __version__
from seestar_watch.errors import EXIT_INTERNAL, UserError

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: $SEESTAR_WATCH_CONFIG, ./config.yaml, the user config folder).",
)


def reports_errors(command: F) -> F:
    """Turn a UserError into one clear line and its exit code; a bug into exit 3."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt):
            raise
        except Exception as exc:
            import traceback

            traceback.print_exc()
            click.echo(f"internal error: {type(exc).__name__}: {exc} (this is a bug)", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="seestar-watch")
def cli() -> None:
    """Run your photometry command once for every frame a ZWO Seestar writes to its share."""


@cli.command("check-config")
@config_option
@reports_errors
def check_config(config_path: Path | None) -> None:
    """Validate the config file and print a short summary (exit 1 when it has problems)."""
    from seestar_watch.config import describe, find_config_file, load_config

    config = load_config(find_config_file(config_path))
    for line in describe(config):
        click.echo(line)
    click.echo("config ok")


def main() -> None:
    cli(prog_name="seestar-watch")
