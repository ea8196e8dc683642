"""Which of a checkpoint's weights to use (torch-free, so the CLI can offer the choices cheaply).

A checkpoint holds the trained weights and, with `train.average`, their EMA or NT-ASGD average.
"auto": the averaged weights when the checkpoint has them, as training evaluated them; else the
trained ones.
"""

from typing import Literal, get_args

Weights = Literal["auto", "trained", "averaged"]
WEIGHT_CHOICES: tuple[str, ...] = get_args(Weights)
