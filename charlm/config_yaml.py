"""Reading a config file's YAML safely, and applying `--set key=value` overrides to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from charlm.errors import CharlmError, ConfigError
from charlm.files import read_bytes


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file safely into a dict; empty file -> {}."""
    data = read_bytes(path, "config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CharlmError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"invalid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), [f"the top level must be a mapping of sections (data, model, train), got {type(data).__name__}"]
        )
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str], problems: list[str]) -> set[str]:
    """Apply `section.key=value` strings to `raw` in place; return the dotted keys set.

    Values are parsed as YAML scalars (`true`, `64`, `[0.8, 0.1, 0.1]`), then converted by the
    schema's declared type like file values.
    """
    keys: set[str] = set()
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, for example train.lr=1e-3")
            continue
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            problems.append(f"--set {item!r}: the key must be section.name, for example model.hidden_size")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            problems.append(f"--set {item!r}: section {parts[0]!r} in the file is not a mapping")
            continue
        section[parts[1]] = value
        keys.add(key)
    return keys
