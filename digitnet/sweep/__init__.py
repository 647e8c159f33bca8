"""`digitnet sweep`: hyperparameter search with Optuna, from one laptop to many machines.

spec.py reads the sweep file, study.py opens the Optuna study (SQLite or a shared database),
objective.py trains one trial as a normal run, worker.py runs trials until the study is done,
results.py prints and writes what was found (the table, best.yaml, the report page).
"""
