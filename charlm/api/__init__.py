"""The Python API's implementation; its names are re-exported by `charlm` (charlm/__init__.py),
which is where users import them from.

    run.py        train(), list_runs(), Run: training and run directories
    model.py      load(), Model, State: sampling, streaming, scoring, surprisal, next
    arguments.py  type checks of the arguments, each failure one ArgumentError naming it
"""
