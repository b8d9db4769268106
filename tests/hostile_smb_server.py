"""A hostile SMB server for the tests: impacket's real SMB2 server, its answers bent.

    python hostile_smb_server.py PORT FOLDER [MODE ...]

Serves FOLDER as the guest share "EMMC Images" on 127.0.0.1:PORT and prints "serving"
once it listens. impacket already behaves as a careless server does: it sends names as
they are on its disk (a file named `..\\..\\evil.fit` goes out as it is), refuses change
notifications (STATUS_NOT_SUPPORTED) and gives no file ids. MODEs bend it further:

- truncated: every folder's listing ends with an entry shorter than its fixed part
  (truncated:<n>: only the first n listings);
- empty-name: every folder's listing holds one more folder, with an empty name;
- endless: a folder's listing never ends (each answer starts it over);
- slow:<s>: every answer is sent <s> seconds late.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
from typing import Any

from impacket import smb3structs as smb2
from impacket import smbserver

ENTRY = struct.Struct("<II8x8xq8xq8xIII4xQ")  # FILE_ID_FULL_DIR_INFORMATION's fixed part
DIRECTORY = 0x10


def entries_end(buffer: bytes) -> int:
    """The offset of the last entry of a listing's buffer."""
    offset = 0
    while True:
        following = struct.unpack_from("<I", buffer, offset)[0]
        if not following:
            return offset
        offset += following


def bent(buffer: bytes, modes: list[str], answered: int) -> bytes:
    """The listing's buffer as the modes bend it; `answered`: listings answered before."""
    last = entries_end(buffer)
    padded = buffer + bytes(-len(buffer) % 8)
    truncated = [m for m in modes if m == "truncated" or m.startswith("truncated:")]
    if "empty-name" in modes:
        extra = ENTRY.pack(0, 0, 0, 0, DIRECTORY, 0, 0, 0)
    elif truncated and (truncated[0] == "truncated" or answered < int(truncated[0][10:])):
        extra = b"\x00" * 20  # an entry shorter than its 80-byte fixed part
    else:
        return buffer
    head = struct.pack("<I", len(padded) - last)
    return padded[:last] + head + padded[last + 4 :] + extra


def main() -> None:
    port, folder, modes = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    logging.disable(logging.CRITICAL)
    server = smbserver.SimpleSMBServer(listenAddress="127.0.0.1", listenPort=port)
    server.addShare("EMMC Images", folder, "")
    server.setSMB2Support(True)
    server.setSMBChallenge("")
    server.setLogFile("/dev/null")
    smb = server.getServer()
    original = smb.hookSmb2Command(smb2.SMB2_QUERY_DIRECTORY, None)

    answered = [0]

    def query_directory(conn_id: int, smb_server: Any, packet: Any) -> Any:
        if "endless" in modes:  # SMB2_RESTART_SCANS on every request: it starts over
            data = bytearray(packet["Data"])
            data[3] |= smb2.SMB2_RESTART_SCANS
            packet["Data"] = bytes(data)
        answers, packets, status = original(conn_id, smb_server, packet)
        if status == 0 and answers and "Buffer" in answers[0].fields:
            buffer = bent(answers[0]["Buffer"], modes, answered[0])
            answered[0] += 1
            answers[0]["Buffer"] = buffer
            answers[0]["OutputBufferLength"] = len(buffer)
        return answers, packets, status

    smb.hookSmb2Command(smb2.SMB2_QUERY_DIRECTORY, query_directory)
    delays = [float(mode.split(":")[1]) for mode in modes if mode.startswith("slow:")]
    if delays:
        for command in list(smb._SMBSERVER__smb2Commands):  # every answer, late
            handler = smb._SMBSERVER__smb2Commands[command]
            smb.hookSmb2Command(command, _late(handler, delays[0]))
    print("serving", flush=True)
    server.start()


def _late(handler: Any, delay: float) -> Any:
    def late(*args: Any) -> Any:
        time.sleep(delay)
        return handler(*args)

    return late


if __name__ == "__main__":
    main()
