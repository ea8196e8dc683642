"""A look inside a trained model: `charlm viz` writes one self-contained HTML page of a span of
text shaded by the model's surprisal, its top-5 guesses for every character, and the
activation of any hidden unit, with the units that track simple properties of the text ranked.

    trace.py       run the model over the span one character at a time: surprisal, top-5
                   guesses and every layer's state after each character
    labels.py      how each token is shown (PTB's spaces, bytes of a UTF-8 character)
    properties.py  properties of the text (quotes, parentheses, line position, ...) and each
                   unit's correlation with them
    quantize.py    activations as int8 levels with a scale per unit
    page.py        the page: a JSON header, one deflated binary blob, and page.{html,css,js}
    build.py       `charlm viz` as one library call
"""
