"""`smb://host/share/folder`: the address of a share read with no mount, and its parser."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SmbUrl:
    """`smb://[user[:password]@]host[:port]/<share>/<folder>...`, the share's names as they are.

    Shown (str, logs, `{source}`) without the password and without percent-encoding, so a
    frame's URL is one exact argument: smb://seestar.local/EMMC Images/MyWorks/M 94_sub/x.fit
    """

    host: str
    share: str
    folder: tuple[str, ...] = ()
    port: int = 445
    username: str = "guest"
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.url_of("")

    def url_of(self, relpath: str) -> str:
        """The URL of `relpath` (a path below the folder, "/"-separated); "" for the folder."""
        user = "" if self.username == "guest" else f"{self.username}@"
        port = "" if self.port == 445 else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        parts = [self.share, *self.folder, *(p for p in relpath.split("/") if p)]
        return f"smb://{user}{host}{port}/" + "/".join(parts)


SMB_SCHEME = "smb://"


def parse_smb_url(text: str) -> SmbUrl:
    """An SmbUrl; ValueError saying what is wrong with `text`."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(text)
    try:
        port = parts.port or 445
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("no host (smb://seestar.local/EMMC Images/MyWorks)")
    names = [unquote(name) for name in parts.path.split("/") if name]
    if not names:
        raise ValueError("no share name (smb://seestar.local/EMMC Images/MyWorks)")
    bad = [n for n in names if n in (".", "..") or "\\" in n or any(ord(c) < 32 for c in n)]
    if bad or parts.query or parts.fragment:
        raise ValueError("a share or folder name holds '..', a backslash, '?' or '#'")
    return SmbUrl(
        host=parts.hostname,
        share=names[0],
        folder=tuple(names[1:]),
        port=port,
        username=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "",
    )
