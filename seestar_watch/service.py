"""Running unattended: the systemd unit and the launchd agent, rendered for this machine.

The templates live here, once; `systemd/` and `launchd/` in the repository hold
them rendered with example values (a test keeps the two equal). `service
install` renders them with this machine's absolute paths and user, writes them
where the service manager looks, and prints the commands that enable them.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import plistlib
import pwd
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seestar_watch.config import CONFIG_ENV, Config
from seestar_watch.config.fleet import Claims

UNIT_NAME = "seestar-watch.service"
TEMPLATE_NAME = "seestar-watch@.service"  # one daemon per telescope: seestar-watch@NAME
AGENT_LABEL = "local.seestar-watch"
DROP_IN = "instance.conf"  # seestar-watch@NAME.service.d/instance.conf: its config
LAUNCHD_PATH = "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin"

_UNIT = """\
# seestar-watch: runs the photometry pipeline once for every frame a ZWO Seestar writes.
# Rendered by `seestar-watch service install`; see README "Run it as a service".
[Unit]
Description=seestar-watch: photometry for every Seestar frame
# Network shares may come later or never: no Requires= or RequiresMountsFor= on
# the share, so an unmount does not stop the service (it waits and resumes).
After=network-online.target remote-fs.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
{user_lines}Restart=on-failure
RestartSec=10
# 1: a problem only the user can fix (config, ledger); 2: bad command line.
RestartPreventExitStatus=1 2
# SIGTERM to the daemon only; it gives a running command pipeline.shutdown_grace
# (30 s by default) and then stops that command's process group itself.
KillMode=mixed
TimeoutStopSec=60
WatchdogSec=60
Environment=PYTHONUNBUFFERED=1
{state_lines}
# Hardening that still lets it read the share and run your pipeline.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
{writable_line}PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictNamespaces=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
DevicePolicy=closed
KeyringMode=private
RemoveIPC=yes
# the archive copies and the ledger are for this user only
UMask=0077

[Install]
WantedBy={wanted_by}
"""

# In the user manager most sandboxing needs privileges it does not have.
_USER_UNIT = """\
# seestar-watch: runs the photometry pipeline once for every frame a ZWO Seestar writes.
# Rendered by `seestar-watch service install --user`; see README "Run it as a service".
[Unit]
Description=seestar-watch: photometry for every Seestar frame
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=1 2
KillMode=mixed
TimeoutStopSec=60
WatchdogSec=60
Environment=PYTHONUNBUFFERED=1
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
UMask=0027

[Install]
WantedBy=default.target
"""


@dataclass(frozen=True)
class Rendered:
    text: str
    path: Path  # where it belongs
    enable: list[str]  # commands (for a person) that enable and start it
    stop: list[list[str]]  # argv that stop and disable it, run by `service uninstall`
    folders: list[Path]  # folders that must exist first
    notes: list[str] = field(default_factory=list)  # what a person must know besides
    # folders the service writes to, created for (and owned by) the user it runs as
    data_folders: list[Path] = field(default_factory=list)
    run_as: str | None = None
    # written too, before `path`: an instance's template unit, shared by all instances
    also: dict[Path, str] = field(default_factory=dict)


def executable() -> list[str]:
    """The absolute command that starts seestar-watch on this machine."""
    found = shutil.which("seestar-watch")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "seestar_watch"]


def render_systemd(
    command: list[str],
    config: Path,
    *,
    user: bool,
    run_as: str | None = None,
    writable: list[Path] | None = None,
    home: Path | None = None,
    instance: str | None = None,
) -> Rendered:
    if instance is not None:
        return _render_instance(
            command, config, instance, user=user, run_as=run_as, writable=writable, home=home
        )
    exec_start = shlex.join([*command, "run", "--config", str(config)])
    home = home or Path.home()
    notes = []
    if user:
        path = home / ".config" / "systemd" / "user" / UNIT_NAME
        text = _USER_UNIT.format(exec_start=exec_start)
        ctl = ["systemctl", "--user"]
        notes.append(
            "and keep it running when you are not logged in (without this, the user unit"
            f" stops at logout and the night is lost):\n  loginctl enable-linger {default_user()}"
        )
    else:
        path = Path("/etc/systemd/system") / UNIT_NAME
        run_as = run_as or default_user()
        text = _UNIT.format(
            exec_start=exec_start,
            user_lines=f"User={run_as}\nGroup={run_as}\n",
            # the ledger and the archive default to the user's state/data folders; for a
            # system service those become /var/lib/seestar-watch, which systemd creates
            state_lines="StateDirectory=seestar-watch\n"
            "Environment=XDG_STATE_HOME=%S XDG_DATA_HOME=%S\n"
            "WorkingDirectory=%S/seestar-watch",
            writable_line=_writable_line(writable or []),
            wanted_by="multi-user.target",
        )
        ctl = ["sudo", "systemctl"]
    return Rendered(
        text,
        path,
        enable=[
            shlex.join([*ctl, "daemon-reload"]),
            shlex.join([*ctl, "enable", "--now", UNIT_NAME]),
        ],
        stop=[
            [*(["systemctl", "--user"] if user else ["systemctl"]), "disable", "--now", UNIT_NAME]
        ],
        folders=[path.parent],
        notes=notes,
        data_folders=[] if user else list(writable or []),
        run_as=run_as,
    )


def unit_folder(*, user: bool, home: Path | None = None) -> Path:
    if user:
        return (home or Path.home()) / ".config" / "systemd" / "user"
    return Path("/etc/systemd/system")


def _render_instance(
    command: list[str],
    config: Path,
    instance: str,
    *,
    user: bool,
    run_as: str | None,
    writable: list[Path] | None,
    home: Path | None,
) -> Rendered:
    """One telescope's daemon as `seestar-watch@NAME.service`: the template unit (the same
    for every instance) and a drop-in that gives this instance its config file."""
    folder = unit_folder(user=user, home=home)
    single = render_systemd(command, config, user=user, run_as=run_as, home=home)
    template = single.text.replace(
        "Description=seestar-watch: photometry for every Seestar frame",
        "Description=seestar-watch for the telescope %i: photometry for every frame",
    ).replace(
        shlex.join([*command, "run", "--config", str(config)]),
        # the config comes from the instance's drop-in ($SEESTAR_WATCH_CONFIG)
        shlex.join([*command, "run"]),
    )
    template = template.replace(
        "# Rendered by `seestar-watch service install",
        "# A template: one daemon per telescope, seestar-watch@NAME, each with the config its\n"
        "# drop-in seestar-watch@NAME.service.d/instance.conf names.\n"
        "# Rendered by `seestar-watch service install --instance",
    )
    lines = [
        f"# The telescope {instance}: rendered by `seestar-watch service install --instance`.",
        "[Service]",
        f"Environment={_quoted_assignment(CONFIG_ENV, str(config))}",
    ]
    if not user and writable:
        lines.append("ReadWritePaths=" + " ".join(f"-{p}" for p in writable))
    unit = f"seestar-watch@{instance}.service"
    ctl = ["systemctl", "--user"] if user else ["sudo", "systemctl"]
    path = folder / f"{unit}.d" / DROP_IN
    return Rendered(
        "\n".join(lines) + "\n",
        path,
        enable=[shlex.join([*ctl, "daemon-reload"]), shlex.join([*ctl, "enable", "--now", unit])],
        stop=[[*(["systemctl", "--user"] if user else ["systemctl"]), "disable", "--now", unit]],
        folders=[path.parent],
        notes=single.notes,
        data_folders=[] if user else list(writable or []),
        run_as=single.run_as,
        also={folder / TEMPLATE_NAME: template},
    )


def _quoted_assignment(name: str, value: str) -> str:
    """`NAME=value` as systemd reads it from Environment=, spaces and quotes kept."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{name}={escaped}"'


def installed_folders(home: Path | None = None) -> list[Path]:
    """Where installed services of seestar-watch may be: systemd's system and user folders,
    and macOS's LaunchAgents."""
    home = home or Path.home()
    return [
        unit_folder(user=False),
        unit_folder(user=True, home=home),
        home / "Library" / "LaunchAgents",
    ]


SYSTEM_STATE = "/var/lib"  # %S: a system unit's XDG_STATE_HOME and XDG_DATA_HOME (see _UNIT)


@contextlib.contextmanager
def as_a_system_unit_sees_it() -> Iterator[None]:
    """The default ledger and archive folders resolved as a system unit's daemon resolves
    them (under /var/lib/seestar-watch, not the home of whoever asks)."""
    names = ("XDG_STATE_HOME", "XDG_DATA_HOME")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, SYSTEM_STATE))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def claims_of(name: str, config: Config, *, system: bool) -> Claims:
    """What a telescope's daemon holds, where its service (a system unit or not) puts it."""
    with as_a_system_unit_sees_it() if system else contextlib.nullcontext():
        return Claims.of(name, config)


def installed_claims(
    folders: list[Path], system_folder: Path, *, exclude: list[Path], instance: str | None
) -> tuple[list[Claims], list[str]]:
    """What the telescopes installed as services in `folders` hold (but those whose config
    is in `exclude`, and the instance being installed again), and a warning for each whose
    config cannot be read."""
    from seestar_watch.config import ConfigError, load_config

    claims, warnings = [], []
    for folder in folders:
        for name, path in installed_instances([folder]).items():
            if path.absolute() in exclude or name == instance:
                continue
            try:
                config = load_config(path)
            except ConfigError as exc:
                warnings.append(f"the installed {name}: {exc}")
                continue
            system = folder == system_folder
            claims.append(claims_of(f"the installed {name} ({path})", config, system=system))
    return claims, warnings


def installed_instances(folders: list[Path]) -> dict[str, Path]:
    """The telescopes already installed as services, by name, with their config files: the
    instances' drop-ins in the systemd folders, the agents' plists in a LaunchAgents folder,
    and the single unit or agent (named by its config file, as `check-config` names it)."""
    found: dict[str, Path] = {}
    for folder in folders:
        for drop_in in sorted(folder.glob(f"seestar-watch@*.service.d/{DROP_IN}")):
            name = drop_in.parent.name.removeprefix("seestar-watch@").removesuffix(".service.d")
            config = _config_in_drop_in(drop_in)
            if config is not None:
                found[name] = config
        single = folder / UNIT_NAME
        if single.is_file() and (config := _config_in_unit(single)) is not None:
            found[f"{UNIT_NAME} ({config.name})"] = config
        for plist in sorted(folder.glob(f"{AGENT_LABEL}*.plist")):
            config = _config_in_plist(plist)
            if config is not None:
                found[plist.stem.removeprefix(AGENT_LABEL).lstrip(".") or AGENT_LABEL] = config
    return found


def _config_in_drop_in(path: Path) -> Path | None:
    for words in _unit_lines(path, "Environment"):
        for word in words:
            name, _, value = word.partition("=")
            if name == CONFIG_ENV and value:
                return Path(value)
    return None


def _config_in_unit(path: Path) -> Path | None:
    for words in _unit_lines(path, "ExecStart"):
        if (config := _config_option(words)) is not None:
            return config
    return None


def _config_option(arguments: list[str]) -> Path | None:
    """The file a `seestar-watch run` command line gives with --config (or -c)."""
    for option, value in itertools.pairwise(arguments):
        if option in ("--config", "-c"):
            return Path(value)
    return None


def _unit_lines(path: Path, key: str) -> list[list[str]]:
    """The values of `key=` in a unit file, each split into words as systemd would."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    values = []
    for line in text.splitlines():
        name, equals, value = line.partition("=")
        if equals and name.strip() == key:
            try:
                values.append(shlex.split(value.replace("%%", "%")))
            except ValueError:
                continue  # not ours: a hand-written line we cannot read
    return values


def _config_in_plist(path: Path) -> Path | None:
    try:
        agent = plistlib.loads(path.read_bytes())
        arguments = [str(a) for a in agent.get("ProgramArguments", [])]
    except (OSError, ValueError, AttributeError, plistlib.InvalidFileException):
        return None
    return _config_option(arguments)


def writable_folders(config: Config) -> list[Path]:
    """Where the daemon and its own stages write, besides the unit's own state folder (the
    default for the ledger and the archive): state.path and archive.path when set, and the
    folder of a `quicklook --csv FILE` in the pipeline. The rest of the disk is read-only
    to the system unit, the home folders included."""
    folders = []
    if config.state.path is not None:
        folders.append(config.state.path.parent)
    if config.archive.enabled and config.archive.path is not None:
        folders.append(config.archive.path)
    command = list(config.pipeline.command)
    if "quicklook" in command:
        for option, value in itertools.pairwise(command):
            if option == "--csv" and "{" not in value:
                folders.append((config.folder / os.path.expanduser(value)).parent)
    return list(dict.fromkeys(folders))


PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))


def private_tmp_problems(config: Config) -> list[str]:
    """What a system unit (PrivateTmp=yes: a /tmp of its own, empty) could never see: the
    config file, the ledger, the archive or a local watch_path under /tmp or /var/tmp."""
    places = {
        "the config file": config.source.absolute(),
        "the ledger (state.path)": config.state.ledger,
        "the archive (archive.path)": config.archive.folder if config.archive.enabled else None,
        "image_watcher.watch_path": config.image_watcher.watch_path
        if isinstance(config.image_watcher.watch_path, Path)
        else None,
    }
    return [
        f"warning: {what} is under {tmp} ({path}): the service has a /tmp of its own"
        f" (PrivateTmp=yes) and would never see it; move it out of {tmp}"
        for what, path in places.items()
        if path is not None
        for tmp in PRIVATE_TMP
        if tmp == path or tmp in path.parents
    ]


def _writable_line(paths: list[Path]) -> str:
    line = "# Add the folders your pipeline writes its results to:\n"
    if not paths:
        return line + "# ReadWritePaths=/home/you/photometry\n"
    return line + "ReadWritePaths=" + " ".join(f"-{p}" for p in paths) + "\n"


def render_launchd(
    command: list[str], config: Path, *, home: Path | None = None, instance: str | None = None
) -> Rendered:
    """The launchd agent; with `instance`, one of several (launchd has no templates: each
    telescope is an agent of its own, `local.seestar-watch.NAME`, with its own log)."""
    home = home or Path.home()
    logs = home / "Library" / "Logs" / "seestar-watch"
    label = AGENT_LABEL if instance is None else f"{AGENT_LABEL}.{instance}"
    log_name = "seestar-watch.log" if instance is None else f"seestar-watch-{instance}.log"
    agent = {
        "Label": label,
        "ProgramArguments": [*command, "run", "--config", str(config)],
        "RunAtLoad": True,
        # restart after a crash, not after a clean stop; a config error (exit 1) is
        # retried every ThrottleInterval seconds, which keeps the log readable
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 30,
        "ProcessType": "Background",
        "EnvironmentVariables": {"PATH": LAUNCHD_PATH, "PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(logs / log_name),
        "StandardErrorPath": str(logs / log_name),
        "WorkingDirectory": str(home),
    }
    path = home / "Library" / "LaunchAgents" / f"{label}.plist"
    domain = "gui/$(id -u)"
    return Rendered(
        plistlib.dumps(agent, sort_keys=False).decode(),
        path,
        enable=[f"launchctl bootstrap {domain} {shlex.quote(str(path))}"],
        stop=[["launchctl", "bootout", f"gui/{os.getuid()}/{label}"]],
        folders=[path.parent, logs],
    )


def default_user() -> str:
    """The user the system service runs as: whoever ran sudo, else the current user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def install(rendered: Rendered) -> None:
    for folder in rendered.folders:
        folder.mkdir(parents=True, exist_ok=True)
    for folder in rendered.data_folders:
        _make_folder_for(folder, rendered.run_as)
    for path, text in [*rendered.also.items(), (rendered.path, rendered.text)]:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".new")
        temporary.write_text(text)
        temporary.replace(path)


def _make_folder_for(folder: Path, owner: str | None) -> None:
    """Create `folder` (and missing parents) owned by `owner`: under ProtectHome=read-only the
    service itself could not create a folder in a home, and sudo would make it root's."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir()
        if owner is not None and os.geteuid() == 0:
            user = pwd.getpwnam(owner)
            os.chown(created, user.pw_uid, user.pw_gid)


def uninstall(rendered: Rendered) -> list[str]:
    """Stop and disable the service, remove its file; what happened, line by line."""
    if not rendered.path.exists():
        return [f"nothing to remove: {rendered.path} does not exist"]
    report = [_stop(argv) for argv in rendered.stop]
    rendered.path.unlink()
    report.append(f"removed {rendered.path}")
    if rendered.path.name == DROP_IN:  # an instance: its folder, and the template if unused
        with contextlib.suppress(OSError):
            rendered.path.parent.rmdir()
        for template in rendered.also:
            others = list(template.parent.glob(f"seestar-watch@*.service.d/{DROP_IN}"))
            if template.exists() and not others:
                template.unlink()
                report.append(f"removed {template} (no instance uses it any more)")
    return report


def _stop(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not found: nothing to stop"
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode == 0:
        return f"ran: {shlex.join(argv)}"
    why = (result.stderr or result.stdout).strip().splitlines()
    return f"could not run {shlex.join(argv)}: {why[0] if why else result.returncode}"
