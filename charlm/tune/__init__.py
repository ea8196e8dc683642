"""`charlm tune`: sweeps on Optuna. A study in a journal file next to the runs, or in a database
for workers on many machines; each trial an ordinary run directory.

    space.py   the search space YAML, checked against the schema
    study.py   where a study lives (journal file or database URL), opening it, recovering trials
    worker.py  one worker: take trials, train each as charlm train does, prune, retry
    report.py  `charlm tune show`: the trials table, the best config, importances and plots
"""
