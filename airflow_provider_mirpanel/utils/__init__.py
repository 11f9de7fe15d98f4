"""Small helpers of the Airflow-facing modules: state stores, waits, log listings, Airflow lines."""
