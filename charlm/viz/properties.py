"""Simple properties of the text at each position, and how strongly each hidden unit follows
them: the Pearson correlation, over the span, between a unit's activation after reading a
character and the property at that character.

Karpathy, Johnson & Fei-Fei (2015) found LSTM cells that track being inside quotes or
parentheses and the position in the line; the page ranks every unit by these correlations so
that such a cell is one click away.
"""

from __future__ import annotations

import torch

OPENING_QUOTES, CLOSING_QUOTES = "\u201c", "\u201d"
UNITS_PER_BLOCK = 256

# name -> what the page says it is
PROPERTIES = {
    "quote": "inside double quotes (the quote marks included)",
    "parens": "inside parentheses (the parentheses included)",
    "line_position": "characters since the start of the line",
    "word_start": "first character of a word",
    "digit": "a digit",
    "surprisal": "the model's surprisal at the character, in bits",
}


def text_properties(labels: list[str], surprisal: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each property's value at every position of the shown text (float64, NaN where a
    position has no value: surprisal before the first prediction)."""
    n = len(labels)
    quote, parens, column, word_start, digit = (torch.zeros(n, dtype=torch.float64) for _ in range(5))
    inside_quote, depth, col, previous = False, 0, 0, "\n"
    for i, label in enumerate(labels):
        ch = label[-1] if len(label) == 1 else ""  # "<unk>", a pending byte: no character
        opens = ch == OPENING_QUOTES or (ch == '"' and not inside_quote)
        closes = ch == CLOSING_QUOTES or (ch == '"' and inside_quote)
        quote[i] = float(inside_quote or opens or closes)
        inside_quote = (inside_quote or opens) and not closes
        depth += ch == "("
        parens[i] = float(depth > 0 or ch == ")")
        depth = max(0, depth - (ch == ")"))
        column[i] = col
        col = 0 if label == "\n" else col + 1
        word_start[i] = float(ch.isalnum() and not (previous.isalnum() or previous == "'"))
        digit[i] = float(ch.isdigit())
        previous = ch or previous
    return {
        "quote": quote,
        "parens": parens,
        "line_position": column,
        "word_start": word_start,
        "digit": digit,
        "surprisal": surprisal.double(),
    }


def correlations(activations: torch.Tensor, properties: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pearson r of every unit (columns of `activations`, (N, units)) with every property,
    (len(properties), units) in the order given. Positions where a property is NaN are left out
    of its correlation; a property or a unit that does not vary over them correlates 0."""
    out = torch.zeros(len(properties), activations.size(1))
    for first in range(0, activations.size(1), UNITS_PER_BLOCK):  # float64 a block of units at a time
        a = activations[:, first : first + UNITS_PER_BLOCK].double()
        for k, values in enumerate(properties.values()):
            keep = ~values.isnan()
            out[k, first : first + a.size(1)] = _pearson(a[keep], values[keep]).float()
    return out


def _pearson(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    if len(p) < 2:
        return torch.zeros(a.size(1), dtype=torch.float64)
    # A unit that barely moves (spread under 1e-3 of its size: saturated, or dead) would get
    # an r made of rounding noise, and a high one at that; it counts as not varying.
    moves = a.std(0) > 1e-3 * a.abs().amax(0)
    a = a - a.mean(0)
    p = p - p.mean()
    denominator = a.norm(dim=0) * p.norm()
    r = (a * p.view(-1, 1)).sum(0) / denominator.clamp_min(1e-300)
    return torch.where(moves & (denominator > 0), r, torch.zeros_like(r)).clamp(-1.0, 1.0)


def varies(values: torch.Tensor) -> bool:
    """Whether a property takes more than one value in the span (else no unit can track it)."""
    kept = values[~values.isnan()]
    return len(kept) > 1 and bool((kept != kept[0]).any())
