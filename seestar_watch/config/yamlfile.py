"""The config file: found (-c, $SEESTAR_WATCH_CONFIG, ./config.yaml, the user folder), read
with a hardened safe_load (size, depth, aliases, duplicate keys), then parsed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from seestar_watch.config.checks import quoted
from seestar_watch.config.parse import parse_config
from seestar_watch.config.sections import Config
from seestar_watch.errors import ConfigError

CONFIG_ENV = "SEESTAR_WATCH_CONFIG"
CONFIG_NAME = "config.yaml"

# A config is a few KB. A file from a forum can hold an alias bomb ("billion laughs"),
# nesting thousands of levels deep, or a million-item list: each is refused, in one line
# and well under a second, before anything is built from it.
MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_VALUES = 10_000  # values in the document once its aliases are expanded


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error, not "the last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in first_seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"{quoted(key)} is given twice (first on line {first_seen[key] + 1})",
                        key_node.start_mark,
                    )
                first_seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """The document in `text`, refusing deep nesting and alias bombs; raises yaml.YAMLError
    or ValueError with the reason."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events: no recursion, no building
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ValueError(f"line {line}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_VALUES:
            raise ValueError(
                f"the document expands to more than {MAX_VALUES:,} values (aliases that repeat"
                " aliases, a 'billion laughs'?): a config is a few dozen keys"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds with every alias expanded, without expanding it
    (an alias is the node it names: sizes are counted once per node and reused)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if children_done:
            sizes[id(node)] = min(MAX_VALUES + 1, 1 + sum(sizes[id(c)] for c in children))
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def read_config_text(path: Path) -> str:
    """The text of a config file, refused (ConfigError) when it is too large or unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            limit = f"a config is a few KB (at most {MAX_CONFIG_BYTES:,} bytes)"
            raise ConfigError(str(path), [f"the file is {size:,} bytes; {limit}"])
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc}"]) from None


def load_config(path: Path) -> Config:
    """Read, parse and validate one config file."""
    return parse_config(read_document(path), path)


def read_document(path: Path) -> Any:
    """The YAML document in a config file, read safely; ConfigError says why it is not."""
    text = read_config_text(path)
    try:
        raw = parse_yaml(text)
    except ValueError as exc:
        raise ConfigError(str(path), [f"refused: {exc}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"YAML syntax error: {where}{exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"YAML syntax error: {exc}"]) from None
    return raw


def default_config_path() -> Path:
    from platformdirs import user_config_path

    return user_config_path("seestar-watch") / CONFIG_NAME


def find_config_file(explicit: Path | None) -> Path:
    """-c/--config, then $SEESTAR_WATCH_CONFIG, then ./config.yaml, then the user config folder."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    candidates = [Path.cwd() / CONFIG_NAME, default_config_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ["-c/--config (not given)", f"${CONFIG_ENV} (not set)"] + [str(c) for c in candidates]
    raise ConfigError(
        "config",
        [
            "no config file found; looked at: "
            + ", ".join(looked)
            + "; copy config.example.yaml to one of those places or pass -c FILE"
        ],
    )
