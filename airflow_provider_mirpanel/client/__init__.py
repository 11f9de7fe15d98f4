"""What both hooks share, without I/O: the connection read into settings, multi-ID calls, rate limits, defaults.

The second sans-IO layer, above :mod:`airflow_provider_mirpanel.protocol` (the API's own rules):
``calls`` (a connection → settings and key; a form → body; a multi-ID call → chunks → records),
``settings`` (the connection's extras, read and checked), ``ratelimit`` (request budgets),
``defaults`` (every default, Airflow-free). The sync and the async hook only move bytes.
"""
