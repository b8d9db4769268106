"""The shares an SMB server offers: NetrShareEnum (MS-SRVS 3.1.4.8) over the IPC$ pipe.

smbprotocol has no share listing of its own; a user who typed `Seestar` instead of
`EMMC Images` must see the right name, so the DCE/RPC call is written out here: bind
to the srvsvc interface, ask for level-1 share information, read the disk shares.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from seestar_watch.log import get_logger

log = get_logger("seestar_watch.sources.smb")

SRVSVC = (uuid.UUID("4b324fc8-1670-01d3-1278-5a47bf6ee188"), 3, 0)
NDR = (uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2)
NET_SHARE_ENUM = 15
LAST_FRAGMENT = 0x02


def list_shares(session: Any, host: str) -> list[str]:
    """The disk shares `host` lists (not the hidden `$` ones); [] when it will not say."""
    from smbprotocol.open import (
        CreateDisposition,
        CreateOptions,
        FilePipePrinterAccessMask,
        ImpersonationLevel,
        Open,
        ShareAccess,
    )
    from smbprotocol.tree import TreeConnect

    try:
        tree = TreeConnect(session, rf"\\{host}\IPC$")
        tree.connect(require_secure_negotiate=False)
        pipe = Open(tree, "srvsvc")
        pipe.create(
            ImpersonationLevel.Impersonation,
            FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
            0,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
            CreateDisposition.FILE_OPEN,
            CreateOptions.FILE_NON_DIRECTORY_FILE,
        )
        try:
            _rpc(pipe, _bind_pdu())
            stub = _rpc(pipe, _request_pdu(NET_SHARE_ENUM, _share_enum_stub(host)))
        finally:
            pipe.close()
        return _share_names(stub)
    except Exception:  # a listing is a courtesy in an error message: never an error itself
        log.debug("smb.share_list_failed", host=host, exc_info=True)
        return []


def _rpc(pipe: Any, pdu: bytes) -> bytes:
    """Write one DCE/RPC PDU to the pipe; the answer's stub, fragments joined."""
    pipe.write(pdu, 0)
    stub = b""
    while True:
        answer = pipe.read(0, 65536)
        flags, length = answer[3], struct.unpack_from("<H", answer, 8)[0]
        stub += answer[24:length] if answer[2] == 2 else b""  # 2: a response PDU
        if flags & LAST_FRAGMENT or answer[2] != 2:
            return stub


def _header(kind: int, body: bytes, call_id: int) -> bytes:
    # version 5.0, first+last fragment, little-endian NDR, no authentication
    return (
        struct.pack("<BBBB4sHHI", 5, 0, kind, 0x03, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id)
        + body
    )


def _bind_pdu() -> bytes:
    interface, major, minor = SRVSVC
    syntax, version = NDR
    body = struct.pack("<HHIBBH", 4280, 4280, 0, 1, 0, 0)
    body += struct.pack("<HBB", 0, 1, 0) + interface.bytes_le + struct.pack("<HH", major, minor)
    body += syntax.bytes_le + struct.pack("<I", version)
    return _header(11, body, 1)


def _request_pdu(opnum: int, stub: bytes) -> bytes:
    return _header(0, struct.pack("<IHH", len(stub), 0, opnum) + stub, 2)


def _ndr_string(text: str) -> bytes:
    chars = (text + "\0").encode("utf-16-le")
    count = len(chars) // 2
    data = struct.pack("<III", count, 0, count) + chars
    return data + b"\0" * (-len(data) % 4)


def _share_enum_stub(host: str) -> bytes:
    stub = struct.pack("<I", 0x00020000) + _ndr_string(host)  # ServerName, unique
    stub += struct.pack("<III", 1, 1, 0x00020004)  # level 1, its union arm, a container
    stub += struct.pack("<II", 0, 0)  # the container: no entries, no buffer yet
    return stub + struct.pack("<II", 0xFFFFFFFF, 0)  # no size limit, no resume handle


def _share_names(stub: bytes) -> list[str]:
    """The netnames of the disk shares in a NetrShareEnum level 1 answer."""
    level, _, container = struct.unpack_from("<III", stub, 0)
    if level != 1 or not container:
        return []
    count, buffer = struct.unpack_from("<II", stub, 12)
    if not buffer:
        return []
    position = 24  # past the array's conformance count
    entries = [struct.unpack_from("<III", stub, position + 12 * i) for i in range(count)]
    position += 12 * count
    names = []
    for netname, kind, remark in entries:
        name = ""
        for pointer in (netname, remark):
            if not pointer:
                continue
            actual = struct.unpack_from("<I", stub, position + 8)[0]
            text = stub[position + 12 : position + 12 + 2 * actual].decode("utf-16-le")
            position += 12 + 2 * actual + (-(2 * actual) % 4)
            if pointer == netname:
                name = text.rstrip("\0")
        if kind & 0xFFFF == 0 and not name.endswith("$"):  # a disk share, not hidden
            names.append(name)
    return names
