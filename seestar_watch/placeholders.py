"""`{path}`-style placeholders in the pipeline command, replaced inside each argument.

The command is an argv list; a placeholder is replaced by its value inside the
argument that holds it and never passes through a shell, so a file named
`$(rm -rf ~).fit` is just a file name. `{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

PLACEHOLDERS = {
    "path": "the file to read: the archived copy, or the file on the share without an archive",
    "source": "the frame's absolute path on the share",
    "name": "the file name (may start with '-': prefer {path})",
    "stem": "the file name without its extension",
    "relpath": "the path relative to image_watcher.watch_path",
    "size_kb": "the size in KiB",
}
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def unknown_placeholders(argv: Iterable[str]) -> set[str]:
    found = set()
    for arg in argv:
        for match in _TOKEN.finditer(arg):
            name = match.group(1)
            if name is not None and name not in PLACEHOLDERS:
                found.add("{" + name + "}")
    return found


def expand(argv: Iterable[str], values: Mapping[str, str]) -> list[str]:
    """Each argument with its placeholders replaced; one argument stays one argument."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return values[match.group(1)]

    return [_TOKEN.sub(replace, arg) for arg in argv]
