"""Reading a config file's YAML safely, and applying `--set key=value` overrides to it.

A config is a few KB of plain values, so anything that could make reading one slow or large is
refused before it is built: a file over MAX_CONFIG_BYTES, nesting deeper than MAX_YAML_DEPTH,
and aliases that expand to more than MAX_YAML_VALUES values (a "billion laughs" document is 9
aliases of 9 aliases of ... : a few hundred bytes that stand for 10^9 strings). The check walks
the parser's events once, counting what each anchor stands for, so it takes time linear in the
file whatever the aliases would expand to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from charlm.errors import CharlmError, ConfigError, quote, shorten
from charlm.files import read_bytes

MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_VALUES = 10_000  # scalars, lists and mappings once every alias is expanded (a config: ~150)
MAX_YAML_DEPTH = 20  # nested lists and mappings (a config: 3, section > key > list)

# libyaml's parser when PyYAML was built with it (1 MB parses in milliseconds, not seconds).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlRefused(Exception):
    """A YAML document charlm will not build (too deep, aliases that expand too far, bad bytes)."""


class _StrictLoader(_SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # a list or mapping as a key: SafeConstructor's own message, not a crash here
            return loader.construct_mapping(node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_mapping(
    path: Path, what: str = "config file", holds: str = "a mapping of sections (data, model, train)"
) -> dict[str, Any]:
    """Parse a YAML file safely into a dict; empty file -> {}. `what` names the file in errors,
    `holds` says what its top level must be (a search space reuses this with its own words)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0  # read_bytes names the problem
    data = read_bytes(path, what, limit=MAX_CONFIG_BYTES) if size <= MAX_CONFIG_BYTES else b""
    size = max(size, len(data))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            str(path),
            [
                f"the file is {size:,} bytes; a {what.removesuffix(' file')} is a few KB and charlm reads at most "
                f"{MAX_CONFIG_BYTES:,} -- is it the right file?"
            ],
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CharlmError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"invalid YAML{where}: {shorten(problem)}"]) from None
    except YamlRefused as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"the top level must be {holds}, got {type(data).__name__}"])
    return data


def load_yaml(text: str) -> Any:
    """Build the one YAML document in `text` with the strict safe loader.

    Raises:
        yaml.YAMLError: the text is not YAML (its mark says where).
        YamlRefused: nesting or alias expansion beyond the caps, undecodable characters, or a
            tagged value Python cannot build (`!!int abc`, an int of 5,000 digits).
    """
    try:
        _check_expansion(text)
        loader = _StrictLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except UnicodeError:
        raise YamlRefused("the text holds characters that are not valid UTF-8 (undecodable bytes)") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise YamlRefused(f"a value YAML cannot build: {shorten(str(exc))}") from None


def _check_expansion(text: str) -> None:
    """Refuse a document nested deeper than MAX_YAML_DEPTH or whose aliases expand to more than
    MAX_YAML_VALUES values, from the parser's events alone (nothing is built)."""
    stands_for: dict[str, int] = {}  # anchor -> how many values it expands to
    open_: list[list] = []  # per open list or mapping: [its anchor, values in it so far]
    for event in yaml.parse(text, Loader=_SafeLoader):
        line = f"line {event.start_mark.line + 1}" if event.start_mark is not None else "the end"
        if isinstance(event, yaml.DocumentStartEvent):
            stands_for.clear()
            continue
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_) >= MAX_YAML_DEPTH:
                raise YamlRefused(
                    f"lists and mappings nested more than {MAX_YAML_DEPTH} deep at {line} (a config needs 3)"
                )
            open_.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.ScalarEvent):
            anchor, count = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            if any(event.anchor == a for a, _ in open_):
                raise YamlRefused(
                    f"the alias *{shorten(event.anchor)} at {line} is inside its own anchor (a value that holds itself)"
                )
            anchor, count = None, stands_for.get(event.anchor, 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_.pop()
        else:
            continue
        if anchor is not None:
            stands_for[anchor] = count
        if open_:
            open_[-1][1] += count
            count = open_[-1][1]
        if count > MAX_YAML_VALUES:
            raise YamlRefused(
                f"more than {MAX_YAML_VALUES:,} values by {line}, each alias counted as the values it repeats "
                "(a config has about 150); is it the right file?"
            )


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
            problems.append(f"--set {quote(item)}: expected KEY=VALUE, for example train.lr=1e-3")
            continue
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            problems.append(f"--set {quote(item)}: the key must be section.name, for example model.hidden_size")
            continue
        try:
            value = load_yaml(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        except YamlRefused as exc:
            problems.append(f"--set {quote(item)}: {exc}")
            continue
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            problems.append(f"--set {quote(item)}: section {quote(parts[0])} in the file is not a mapping")
            continue
        section[parts[1]] = value
        keys.add(key)
    return keys
