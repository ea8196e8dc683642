"""MkDocs hook: write the configuration reference into configuration.md from the schema.

The page holds a hand-written introduction and the marker below; at build time the marker is
replaced by one table per section of `charlm.config.Config` (every key, its type, default,
allowed range and description), so the reference cannot drift from the code. tests/test_docs.py
imports `render_reference` from this file by path.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

PAGE = "configuration.md"
MARKER = "<!-- config-reference -->"

_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}
_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def render_type(annotation: Any) -> str:
    """A readable type: `integer`, `one of `a`, `b``, `list of integer`, `string or null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(render_type(arg) for arg in args)
    if origin is list and typing.get_origin(args[0]) is typing.Literal:
        return "list of any of " + ", ".join(f"`{value}`" for value in typing.get_args(args[0]))
    if origin is list:
        return f"list of {render_type(args[0])}s"
    if origin is tuple and len(set(args)) == 1:
        return f"{len(args)} {render_type(args[0])}s"
    if origin is tuple:
        return f"{len(args)} values: " + ", ".join(render_type(arg) for arg in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def render_value(value: Any) -> str:
    """A default as it is written in YAML (null, true, [0.9, 0.999])."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def render_range(field: FieldInfo) -> str:
    """The field's bounds from its metadata (ge/gt/le/lt), e.g. `>= 0, < 1`."""
    bounds = []
    for item in field.metadata:
        for kind, attribute, sign in _BOUNDS:
            if isinstance(item, kind):
                bounds.append(f"{sign} {getattr(item, attribute)!r}")
    return ", ".join(f"`{bound}`" for bound in bounds)


def render_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return render_value(field.default_factory())
    return render_value(field.default)


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def render_section(name: str, section: type[BaseModel]) -> str:
    """One section's table: every key with its type, default, range and description."""
    lines = [f"## `{name}`", ""]
    if section.__doc__:
        lines += [_cell(section.__doc__), ""]
    lines += ["| key | type | default | range | description |", "| --- | --- | --- | --- | --- |"]
    for key, field in section.model_fields.items():
        cells = (
            f"`{name}.{key}`",
            render_type(field.annotation),
            render_default(field),
            render_range(field),
            _cell(field.description),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_reference(config: type[BaseModel]) -> str:
    """Every section of `config` (a pydantic model whose fields are sections), in schema order."""
    return "\n".join(render_section(name, field.annotation) for name, field in config.model_fields.items())


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} lost its marker {MARKER}: the configuration reference has nowhere to go")
    from charlm.config import Config

    return markdown.replace(MARKER, render_reference(Config))
