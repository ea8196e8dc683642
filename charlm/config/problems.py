"""One line per config problem that pydantic finds: the dotted key, what is wrong, and for a
misspelt or misplaced key the closest valid one."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from charlm.errors import MAX_PROBLEMS_SHOWN, quote, shorten

# Names people carry over from other tools, mapped to ours, for "did you mean" hints.
_ALIASES = {
    "learning_rate": "lr",
    "epochs": "max_steps",
    "steps": "max_steps",
    "bptt": "seq_len",
    "hidden": "hidden_size",
    "nhid": "hidden_size",
    "layers": "num_layers",
    "nlayers": "num_layers",
    "emsize": "embedding_dim",
    "embedding_size": "embedding_dim",
    "clip": "grad_clip",
    "tied": "tie_weights",
    "tie": "tie_weights",
    "rnn_type": "cell",
    "model": "cell",
    "block_size": "seq_len",
    "sequence_length": "seq_len",
}


def describe_problems(errors: list[dict[str, Any]], override_keys: set[str], schema: type[BaseModel]) -> list[str]:
    """One line per pydantic error; "did you mean" hints only for the first MAX_PROBLEMS_SHOWN
    (the ones a ConfigError shows: 5,000 misspelt keys would otherwise take difflib seconds)."""
    return [
        describe_problem(err, override_keys, schema, suggest=i < MAX_PROBLEMS_SHOWN) for i, err in enumerate(errors)
    ]


def describe_problem(
    err: dict[str, Any], override_keys: set[str], schema: type[BaseModel], suggest: bool = True
) -> str:
    """One line for one pydantic error: dotted path, what is wrong, and a hint."""
    loc = [str(p) for p in err["loc"]]
    path = shorten(".".join(loc))  # a key may be any YAML scalar, of any length
    origin = " (from --set)" if ".".join(loc[:2]) in override_keys else ""
    if err["type"] == "extra_forbidden":
        return f"unknown key '{path}'{origin}{_suggest(loc, schema) if suggest else ''}"
    if err["type"] == "value_error":
        # Our own cross-field validators: the message already names the keys.
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{path}: {msg}" if path else msg
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {quote(got)})"
    return f"{path}: {err['msg'][0].lower()}{err['msg'][1:]}{shown}{origin}"


def _suggest(loc: list[str], schema: type[BaseModel]) -> str:
    """' (did you mean 'train.lr'?)' for a misspelt key, or ''."""
    name = loc[-1]
    if len(name) > 2 * max(map(len, _ALIASES)):
        return ""  # too long to be a misspelling (and difflib's time grows with the length)
    if len(loc) == 1:
        valid = list(schema.model_fields)
        prefix = ""
    else:
        section = schema.model_fields.get(loc[0])
        if section is None:
            return ""
        valid = list(section.annotation.model_fields)
        prefix = loc[0] + "."
    # Match against our names and the other tools' names for them ("lerning_rate" is close to
    # the alias "learning_rate", which means "lr").
    known = {key: key for key in valid} | {a: k for a, k in _ALIASES.items() if k in valid}
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    guess = known[close[0]] if close else None
    if guess is None:
        # A key put in the wrong section: point to the section that has it.
        for other, field in schema.model_fields.items():
            if len(loc) == 2 and name in field.annotation.model_fields:
                return f" (did you mean '{other}.{name}'?)"
        return ""
    return f" (did you mean '{prefix}{guess}'?)"
