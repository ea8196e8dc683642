"""The fixed choices of using a trained run: which split and which dynamic rule (which weights:
runs/checkpoint/weights.py).

They live apart from the modules that act on them (those import torch) so that the command line
can offer them as Typer choices without importing torch for every `charlm --help`.
"""

# What `charlm eval --split` scores; train is what the model learnt from.
SPLITS = ("valid", "test")

# Dynamic evaluation's update rules (inference/dynamic.py) and each one's default step size: the
# best of a grid for configs/ptb_cpu.yaml's model on the first 50,000 characters of valid (static
# 1.4980 BPC): rms lr 3e-4 gave 1.4362 (lr 1e-4..1e-3, decay 0.001..0.03, segments 30..100);
# sgd lr 0.1 gave 1.4528 (lr 1e-4..0.3, decay 0..0.05).
DEFAULT_LR = {"rms": 3e-4, "sgd": 0.1}
