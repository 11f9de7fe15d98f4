"""What the tests share: Airflow CLI runs, Airflow-line differences, the fault matrix, waiting for
conditions, task contexts and in-memory state stores, sandbox orders and balance histories.

Nothing here is a test; ``tests/`` is on ``sys.path`` (pytest's rootdir of ``tests/conftest.py``).
"""
