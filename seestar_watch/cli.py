"""The command line: parse options, build objects, call one function, map errors to exit codes.

Heavy modules (watchdog, astropy, numpy) are imported inside the commands that
need them, so `seestar-watch --help` answers in a fraction of a second.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from seestar_watch import __version__
from seestar_watch.errors import EXIT_INTERNAL, UserError

if TYPE_CHECKING:
    from seestar_watch.config import Config

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: $SEESTAR_WATCH_CONFIG, ./config.yaml, the user config folder).",
)


class Commands(click.Group):
    """The one error boundary, for every command and subcommand alike: a UserError becomes
    one clear line and its exit code; a bug, a logged traceback and 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # `export | head`: the reader has what it wanted
            _quiet_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:
            import logging

            logging.getLogger("seestar_watch").critical("internal_error", exc_info=True)
            click.echo(f"internal error: {type(exc).__name__}: {exc} (this is a bug)", err=True)
            sys.exit(EXIT_INTERNAL)


EXIT_BROKEN_PIPE = 141  # as a command killed by SIGPIPE, what `head` leaves its writer


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: Python flushes it once more on the way out, and a second
    BrokenPipeError there would print a traceback after all."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def load(config_path: Path | None, *, verbose: bool = False) -> Config:
    """Find and load the config, and set up logging from it (`verbose`: every record, with
    all its facts, on a terminal too)."""
    from seestar_watch import terminal
    from seestar_watch.config import find_config_file, load_config

    config = load_config(find_config_file(config_path))
    terminal.configure(config.logging.format, config.logging.level, verbose=verbose)
    return config


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="On a terminal, every log record with all its facts (not one line per frame).",
)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="seestar-watch")
def cli() -> None:
    """Run your photometry command once for every frame a ZWO Seestar writes to its share."""


configs_option = click.option(
    "-c",
    "--config",
    "config_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file; give it once per telescope for several (default: $SEESTAR_WATCH_CONFIG,"
    " ./config.yaml, the user config folder).",
)


@cli.command("check-config")
@configs_option
def check_config(config_paths: tuple[Path, ...]) -> None:
    """Validate the config file and print a short summary (exit 1 when it has problems).

    With several (-c a.yaml -c b.yaml), each is checked, and none may share a ledger, an
    archive folder or a dashboard port with another, or with a telescope already installed
    as a service.
    """
    from seestar_watch import preflight
    from seestar_watch.config import describe, find_config_file
    from seestar_watch.config.fleet import Claims, clashes, load_configs
    from seestar_watch.ledger import low_space

    paths = [path.absolute() for path in config_paths] or [find_config_file(None).absolute()]
    configs = load_configs(paths)
    for n, config in enumerate(configs):
        preflight.require(config)
        if n:
            click.echo("")
        for line in describe(config):
            click.echo(line)
        for warning in (low_space(config.state.ledger), preflight.readable_secrets(config)):
            if warning:
                click.echo(f"warning: {warning}")
    claims = [Claims.of(str(config.source), config) for config in configs]
    problems = clashes(claims + _installed_claims(exclude=paths))
    if problems:
        raise UserError("; ".join(problems))
    click.echo("config ok" if len(configs) == 1 else f"{len(configs)} configs ok, none shared")


def _installed_claims(exclude: list[Path], instance: str | None = None) -> list[Any]:
    """What the telescopes already installed as services hold (see service.installed_claims);
    one whose config cannot be read is said and left out."""
    from seestar_watch.service import installed_claims, installed_folders, unit_folder

    claims, warnings = installed_claims(
        installed_folders(), unit_folder(user=False), exclude=exclude, instance=instance
    )
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return claims


@cli.command("alert-test")
@config_option
def alert_test(config_path: Path | None) -> None:
    """Send one test message to every alerts.urls entry and say, per URL, whether it went.

    Exits 0 when every one went, 1 otherwise.
    """
    config = load(config_path)
    from seestar_watch import preflight

    if not config.alerts.urls:
        raise UserError(f"alerts.urls is empty in {config.source}: nothing to test")
    preflight.require(config)
    from seestar_watch.alerts import trial_alert
    from seestar_watch.alertsender import AlertSender

    trial = trial_alert(str(config.image_watcher.watch_path))
    results = AlertSender(config.alerts.urls).send_now(trial)
    for url, went in results:
        click.echo(f"{'sent' if went else 'FAILED'}  {url}")
    if warning := preflight.readable_secrets(config):
        click.echo(f"warning: {warning}")
    sys.exit(0 if all(went for _, went in results) else 1)


@cli.command("check-mount")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1, max=3600),
    help="Seconds to wait for the share to answer.",
)
def check_mount(config_path: Path | None, as_json: bool, timeout: float) -> None:
    """Is the share ready? One line per check, and the fix for each problem.

    A mounted folder: mount, read-only, answers, frames, observer. An smb:// watch_path:
    host, port, dialect, login, share, folder, answers, frames, change notifications.
    Exits 0 when ready, 1 when not; answers within the timeout even if the share hangs.
    """
    config = load(config_path)
    from seestar_watch.sources.mountcheck import check_mount_isolated, render

    report = check_mount_isolated(config.image_watcher, timeout)
    if as_json:
        import json

        click.echo(json.dumps(report.as_dict(), ensure_ascii=True))
    else:
        click.echo(render(report))
    sys.exit(0 if report.ready else 1)


@cli.command("dashboard")
@configs_option
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Where to serve it (default: dashboard.listen, or 127.0.0.1:8765 when that is off;"
    " 0.0.0.0:8765 opens it to your network).",
)
def dashboard(config_paths: tuple[Path, ...], listen: str | None) -> None:
    """Serve the dashboard from the ledger alone: while the daemon runs, or the morning after.

    Several telescopes side by side: -c a.yaml -c b.yaml, or one file with a `fleet:` list
    of their configs. Read-only (the ledgers are opened read-only). Exits 1 when the address
    is in use.
    """
    from seestar_watch import terminal
    from seestar_watch.config import DEFAULT_LISTEN, find_config_file, parse_listen
    from seestar_watch.config.fleet import FLEET_LISTEN, load_configs, load_fleet
    from seestar_watch.dashboard.server import serve_ledgers

    paths: list[Path] = []
    fleet_listen = None
    for path in list(config_paths) or [find_config_file(None)]:
        if (fleet := load_fleet(path)) is not None:
            paths += fleet.configs
            fleet_listen = fleet_listen or fleet.listen
        else:
            paths.append(path)
    configs = load_configs(paths)
    first = configs[0]
    terminal.configure(first.logging.format, first.logging.level)
    try:
        if listen:
            address = parse_listen(listen)
        elif len(configs) > 1:  # each daemon has its own page on its own port
            address = fleet_listen or FLEET_LISTEN
        else:
            address = first.dashboard.listen or DEFAULT_LISTEN
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    serve_ledgers(configs, address, click.echo)


@cli.command("worker")
@config_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Frames this worker runs at once (default: pipeline.workers).",
)
def worker(config_path: Path | None, concurrency: int | None) -> None:
    """Run frames from the task queue (pipeline.executor: celery) with this config's command.

    The daemon submits each frame to pipeline.broker; this takes them, runs the command as
    `run` would (no shell, its own process group, pipeline.timeout, the result file), and
    answers. Run as many as you like, on this machine or others; SIGTERM lets running
    commands finish.
    """
    config = load(config_path)
    if config.pipeline.broker is None:
        raise UserError(
            f"pipeline.broker is not set in {config.source}: a worker takes its frames from"
            " a Redis broker (e.g. redis://127.0.0.1:6379/0)"
        )
    from seestar_watch import preflight

    if problem := preflight.command_problem_of(config):  # as `run` checks it, here
        raise UserError(f"{config.source}: {problem}")
    from seestar_watch.taskqueue import run_worker

    run_worker(config, concurrency or config.pipeline.workers, click.echo)


@cli.command("demo")
@click.option(
    "--frames",
    default=5,
    show_default=True,
    type=click.IntRange(1, 100),
    help="How many frames the pretend telescope takes.",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Make the demo in this folder and keep it (config, ledger, archive, CSV).",
)
def demo(frames: int, keep: Path | None) -> None:
    """Show the whole thing working, with no telescope and no config, in under a minute."""
    from seestar_watch.tools.demo import run_demo

    sys.exit(run_demo(frames, keep, click.echo))


@cli.command("quicklook")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one row of measurements to this CSV file (header written once).",
)
@click.option(
    "--aperture",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 300),
    help="The aperture's radius in arcsec (fixed: never a multiple of the measured FWHM).",
)
def quicklook(path: Path, csv_path: Path | None, aperture: float) -> None:
    """Background, noise, stars, FWHM and the centre target's instrumental magnitude of a frame.

    Made to be a pipeline stage:
    command: ["seestar-watch", "quicklook", "{path}", "--csv", "/home/you/quicklook.csv"]
    Under the daemon it also leaves its measurements in $SEESTAR_WATCH_RESULT, for
    `status`, `export` and the dashboard.
    """
    import os

    from seestar_watch.results import RESULT_ENV
    from seestar_watch.tools.quicklook import append_csv, load, measure, summary, write_result

    raw, header = load(path)
    result = measure(raw, header, aperture)
    click.echo(summary(path.name, header, result))
    if csv_path is not None:
        append_csv(csv_path, path.name, header, result)
    if result_path := os.environ.get(RESULT_ENV):
        write_result(result_path, result)


class _FrameOrCommand(click.Group):
    """`photometry FRAME ...` measures a frame; `photometry prepare NAME` is a command of
    its own: an argument that names no command is the frame's."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            return "measure", self.commands["measure"], args
        return super().resolve_command(ctx, args)


@cli.group(
    "photometry",
    cls=_FrameOrCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
def photometry() -> None:
    """A calibrated magnitude of your star, with its error, for a frame: plate solved
    offline, an ensemble of comparison stars, mid-exposure JD/HJD/BJD and airmass.

    \b
    seestar-watch photometry FRAME [--target "RA DEC" | --target NAME] [--comps FILE]
                                   [--aperture ARCSEC] [--csv FILE] [--json] [-c CONFIG]
    seestar-watch photometry prepare NAME [-c CONFIG]   (online, beforehand)

    Made to be a pipeline stage:
    command: ["seestar-watch", "photometry", "{path}", "--target", "RR Lyr"]
    Under the daemon it also leaves its result in $SEESTAR_WATCH_RESULT.
    """


@photometry.command("measure", hidden=True)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "target_text", help='"RA DEC" (degrees or sexagesimal), or a name.')
@click.option(
    "--comps",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Comparison stars: an AAVSO VSP table (JSON) or a CSV of name,ra,dec,mag.",
)
@click.option(
    "--aperture",
    type=click.FloatRange(1, 300),
    help="The aperture's radius in arcsec (default: photometry.aperture_arcsec, or from the"
    " field's FWHM).",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Append one row to this CSV file (header written once).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="The result object, one line, instead.")
@config_option
def photometry_measure(
    *,
    path: Path,
    target_text: str | None,
    comps: Path | None,
    aperture: float | None,
    csv_path: Path | None,
    as_json: bool,
    config_path: Path | None,
) -> None:
    import json
    import os

    from seestar_watch.photometry import command
    from seestar_watch.results import RESULT_ENV

    options = command.options_from(config_path)
    result = command.measure_frame(path, options, target_text, comps, aperture)
    shown = json.dumps(result, allow_nan=False) if as_json else command.summary_line(path, result)
    click.echo(shown)
    if csv_path is not None:
        command.append_csv(csv_path, path, result)
    if result_path := os.environ.get(RESULT_ENV):
        command.write_result(result_path, result)


@photometry.command("prepare")
@click.argument("name")
@click.option("--fov", default=90.0, show_default=True, type=click.FloatRange(10, 300),
              help="Arcminutes around the star (an S50 field is 43' x 76').")  # fmt: skip
@click.option("--maglimit", default=13.5, show_default=True, type=click.FloatRange(5, 20))
@config_option
def photometry_prepare(name: str, fov: float, maglimit: float, config_path: Path | None) -> None:
    """While online: save the AAVSO VSP comparison sequence for NAME next to the config."""
    from seestar_watch.photometry import command

    saved = command.prepare(name, fov, maglimit, config_path)
    click.echo(f"saved {saved.path} (chart {saved.chart}, {saved.stars} comparison stars)")
    click.echo(f"use it with: --comps {saved.path}, or photometry.comps: {saved.path.name}")


@cli.command("run")
@config_option
@click.option("--once", is_flag=True, help="Catch up, run everything pending, then exit.")
@click.option(
    "--process-existing",
    is_flag=True,
    help="On a first start, run the frames already there instead of skipping them.",
)
@click.option(
    "--no-wait", is_flag=True, help="Exit 1 if the share is not there instead of waiting."
)
@verbose_option
def run(
    config_path: Path | None, once: bool, process_existing: bool, no_wait: bool, verbose: bool
) -> None:
    """Watch the share and run the pipeline once for every frame that finishes arriving.

    On a terminal it says one line per frame (settled, done or failed with its key result
    fields) and every warning; --verbose, or a log that is not a terminal, gets every
    record. Stops gracefully on SIGTERM or Ctrl-C (a second Ctrl-C stops at once). With
    --once, exits 0 when nothing failed and 1 otherwise.
    """
    config = load(config_path, verbose=verbose)
    from seestar_watch import preflight
    from seestar_watch.daemon import Daemon

    preflight.require(config)  # the checks of check-config: never start only to fail frames

    daemon = Daemon(config, process_existing=process_existing, wait_for_share=not no_wait)
    sys.exit(daemon.run(once=once))


@cli.command("process")
@config_option
@click.argument("frames", nargs=-1)
@click.option("--force", is_flag=True, help="Run frames that are already done again.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Instead of FRAMEs: run every frame done since then again (12h, 30m, 2d, or a local"
    " date or time), from its archived copy: a new pipeline over a night.",
)
@click.option("--all", "every", is_flag=True, help="Instead of FRAMEs: every frame done.")
@verbose_option
def process(
    *,
    config_path: Path | None,
    frames: tuple[str, ...],
    force: bool,
    since: str | None,
    every: bool,
    verbose: bool,
) -> None:
    """Run the pipeline now on these frames (same path as the daemon: ledger and archive).

    A FRAME is named as `status` prints it (its path on the share or its smb:// URL), by its
    path below watch_path, or by its archived copy. Needs the ledger to itself: stop the
    daemon first (or use `retry` while it runs). Exits 0 when every frame ended done, 1
    otherwise.
    """
    if bool(frames) + (since is not None) + every != 1:
        raise click.UsageError("give FRAMEs, or --since WHEN, or --all")
    config = load(config_path, verbose=verbose)
    from seestar_watch import preflight
    from seestar_watch.log import escape
    from seestar_watch.manual import process_frames
    from seestar_watch.report import parse_since

    try:
        start = 0.0 if every else None if since is None else parse_since(since)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    preflight.require(config)

    def progress(ids: list[int]) -> Iterator[int]:
        if len(ids) < 5 or not sys.stderr.isatty():
            yield from ids
            return
        with click.progressbar(ids, label="frames", file=sys.stderr) as bar:
            yield from bar

    outcomes = process_frames(config, frames, force=force, since=start, progress=progress)
    for name, outcome in outcomes.items():
        note = f"\t({outcome.note})" if outcome.note else ""
        click.echo(f"{outcome.state}\t{escape(name)}{note}")
    if start is not None and not outcomes:
        click.echo("no frame done in that time", err=True)
    sys.exit(0 if all(o.state == "done" for o in outcomes.values()) else 1)


@cli.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="How many recent frames to list.",
)
def status(config_path: Path | None, as_json: bool, limit: int) -> None:
    """Frames per state and the most recent frames; works while the daemon runs."""
    config = load(config_path)
    from seestar_watch.report import status_report, status_table

    report = status_report(config, limit)
    if as_json:
        import json

        click.echo(json.dumps(report, ensure_ascii=True))
    else:
        click.echo(status_table(report))


@cli.command("export")
@config_option
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line (the default).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead.")
@click.option(
    "--aavso",
    "as_aavso",
    is_flag=True,
    help="The AAVSO Extended File Format: one observation per frame with a magnitude.",
)
@click.option(
    "--obscode",
    metavar="CODE",
    help="Your AAVSO observer code, for --aavso (default: photometry.obscode).",
)
@click.option(
    "--date",
    "date_kind",
    type=click.Choice(["HJD", "JD"], case_sensitive=False),
    default="HJD",
    show_default=True,
    help="The time --aavso gives (mid-exposure either way).",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only frames first seen since then: 12h, 30m, 2d, or a local date or time"
    " (2026-11-23T18:00). Default: every frame.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of the standard output.",
)
def export(  # click passes every option by name
    *,
    config_path: Path | None,
    as_csv: bool,
    as_json: bool,
    as_aavso: bool,
    obscode: str | None,
    date_kind: str,
    since: str | None,
    output: Path | None,
) -> None:
    """One row per frame: OBJECT, DATE-OBS, EXPTIME, FILTER, state and every result field.

    Works while the daemon runs. Text that a spreadsheet would take for a formula is
    written with a leading '. With --aavso: the report WebObs takes, from the photometry
    stage's results.
    """
    if as_csv + as_json + as_aavso > 1:
        raise click.UsageError("give one of --csv, --json and --aavso")
    config = load(config_path)
    from seestar_watch.report import export_rows, parse_since, write_csv, write_json_lines

    try:
        start = 0.0 if since is None else parse_since(since)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_aavso:
        _export_aavso(config, start, obscode, date_kind, output)
        return
    write = write_json_lines if as_json else write_csv
    rows = export_rows(config, start)
    if output is None:
        write(rows, sys.stdout)
        return
    try:
        with output.open("w", newline="" if not as_json else None) as out:
            count = write(rows, out)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"{count} frame(s) written to {output}", err=True)


OBSCODE = re.compile(r"[A-Z0-9]{1,10}")
WEBOBS_FILES = (".txt", ".csv", ".tsv")  # the only extensions WebObs takes


def _export_aavso(
    config: Config, since: float, obscode: str | None, date_kind: str, output: Path | None
) -> None:
    from seestar_watch.log import escape
    from seestar_watch.photometry import aavso
    from seestar_watch.report import export_rows

    code = (obscode or config.photometry.obscode or "").strip().upper()
    if not code:
        raise click.UsageError("--aavso needs your observer code: --obscode CODE")
    if not OBSCODE.fullmatch(code):
        raise click.UsageError(f"--obscode {code!r}: an AAVSO observer code is letters and digits")
    if output is not None and output.suffix.lower() not in WEBOBS_FILES:
        raise click.UsageError(f"-o {output.name}: WebObs takes only .txt, .csv or .tsv files")
    results = (
        frame["result"] or {} for frame in export_rows(config, since) if frame["state"] == "done"
    )
    report = aavso.export(results, code, "HJD" if date_kind.upper() == "HJD" else "JD", output)
    if output is not None:
        click.echo(f"{report.written} observation(s) written to {output}", err=True)
    for reason, count in sorted(report.left_out.items()):  # from results: shown escaped
        click.echo(f"{count} frame(s) left out: {escape(reason)}", err=True)
    if report.not_vsp:
        click.echo(
            f"warning: {report.not_vsp} observation(s) measured against comparison stars that"
            " are no AAVSO VSP sequence (no chart id): the AAVSO asks for one"
            " (seestar-watch photometry prepare NAME)",
            err=True,
        )
    if report.unnamed:
        click.echo(
            f"warning: {report.unnamed} observation(s) of a target given by its position:"
            " the AAVSO wants its name (photometry.targets, or the VSP sequence's star)",
            err=True,
        )


@cli.command("retry")
@config_option
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed frame.")
@click.argument("frames", nargs=-1)
def retry(config_path: Path | None, all_failed: bool, frames: tuple[str, ...]) -> None:
    """Put failed frames (--failed: all of them) back to pending; a running daemon picks them up.

    A FRAME is named as for `process`: as `status` prints it, by its path below watch_path,
    or by its archived copy.
    """
    if all_failed == bool(frames):
        raise click.UsageError("give either --failed or one or more FRAMEs")
    config = load(config_path)
    from seestar_watch.log import escape
    from seestar_watch.manual import retry_frames

    count, notes = retry_frames(config, None if all_failed else list(frames))
    click.echo(f"{count} failed frame(s) back to pending")
    for path, note in notes.items():
        click.echo(f"{escape(path)}: {note}")


@cli.group("service")
def service() -> None:
    """Install or remove the systemd unit (Linux) or launchd agent (macOS)."""


def _service_options(command: F) -> F:
    options = [
        click.option("--systemd", is_flag=True, help="A systemd unit (the default on Linux)."),
        click.option(
            "--launchd", is_flag=True, help="A launchd user agent (the default on macOS)."
        ),
        click.option(
            "--user",
            is_flag=True,
            help="systemd: a user unit in ~/.config/systemd/user (no root needed).",
        ),
        click.option(
            "--instance",
            metavar="NAME",
            help="One telescope of several: systemd's seestar-watch@NAME (a template unit"
            " and its drop-in), launchd's local.seestar-watch.NAME.",
        ),
        config_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _rendered(
    systemd: bool,
    launchd: bool,
    user: bool,
    config_path: Path | None,
    instance: str | None,
    *,
    check: bool = True,
) -> Any:
    from seestar_watch import preflight
    from seestar_watch.config import find_config_file, load_config
    from seestar_watch.config.fleet import clashes
    from seestar_watch.service import (
        claims_of,
        executable,
        private_tmp_problems,
        render_launchd,
        render_systemd,
        writable_folders,
    )

    if systemd and launchd:
        raise click.UsageError("give --systemd or --launchd, not both")
    if user and launchd:
        raise click.UsageError("--user is for systemd (a launchd agent is always the user's)")
    from seestar_watch.config.sections import SCOPE_NAME  # an instance is named as a scope

    if instance is not None and not SCOPE_NAME.fullmatch(instance):
        raise click.BadParameter(
            "a name of letters, digits, '.', '_' or '-' (at most 40)", param_hint="--instance"
        )
    manager = "launchd" if launchd or (not systemd and sys.platform == "darwin") else "systemd"
    config_file = find_config_file(config_path).absolute()
    config = load_config(config_file)  # a broken config would only crash-loop the service
    if check:
        preflight.require(config)  # a service that would fail every frame helps no one
        name = f"the instance {instance} ({config_file})" if instance else str(config_file)
        system = manager == "systemd" and not user  # its folders are the service's
        problems = clashes(
            [claims_of(name, config, system=system), *_installed_claims([config_file], instance)]
        )
        if problems:
            raise UserError("; ".join(problems))
    if manager == "launchd":
        return render_launchd(executable(), config_file, instance=instance)
    rendered = render_systemd(
        executable(),
        config_file,
        user=user,
        writable=writable_folders(config),
        instance=instance,
    )
    if not user:
        rendered.notes.extend(private_tmp_problems(config))
    return rendered


@service.command("install")
@_service_options
@click.option("--print", "only_print", is_flag=True, help="Print it instead of installing it.")
def service_install(
    *,
    systemd: bool,
    launchd: bool,
    user: bool,
    instance: str | None,
    config_path: Path | None,
    only_print: bool,
) -> None:
    """Render the service for this machine, write it where it belongs, say how to enable it.

    With --instance NAME, one telescope of several: each its own daemon, config, ledger,
    archive and dashboard port (refused when it would share one with another instance).
    """
    from seestar_watch.service import install

    rendered = _rendered(systemd, launchd, user, config_path, instance)
    if only_print:
        for path, text in rendered.also.items():  # an instance's template, then its drop-in
            click.echo(f"# {path}\n{text}")
        if rendered.also:
            click.echo(f"# {rendered.path}")
        click.echo(rendered.text, nl=False)
        for note in rendered.notes:
            if note.startswith("warning:"):
                click.echo(note, err=True)  # the unit alone on stdout, for a pipe
        return
    try:
        install(rendered)
    except PermissionError:
        raise UserError(f"cannot write {rendered.path}: run it with sudo, or use --user") from None
    for path in rendered.also:
        click.echo(f"wrote {path}")
    click.echo(f"wrote {rendered.path}")
    click.echo("enable and start it with:")
    for command in rendered.enable:
        click.echo(f"  {command}")
    for note in rendered.notes:
        click.echo(note)


@service.command("uninstall")
@_service_options
def service_uninstall(
    systemd: bool, launchd: bool, user: bool, instance: str | None, config_path: Path | None
) -> None:
    """Stop and disable the service, and remove what `service install` wrote."""
    from seestar_watch.service import uninstall

    rendered = _rendered(systemd, launchd, user, config_path, instance, check=False)
    try:
        report = uninstall(rendered)
    except PermissionError:
        raise UserError(f"cannot remove {rendered.path}: run it with sudo") from None
    for line in report:
        click.echo(line)


def main() -> None:
    cli(prog_name="seestar-watch")
