"""Plotly views and dashboard pages (a later milestone).

Until then, ``optuna.visualization`` draws any hpo study directly:
``optuna.load_study(study_name=NAME, storage=URL)``.
"""
