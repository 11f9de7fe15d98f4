"""The MirPanel page in Airflow's UI: what the provider keeps in Airflow, shown (issue 22).

- :mod:`.mirpanel_page`: the Airflow plugin (registered by the ``airflow.plugins`` entry point); cheap to import.
- :mod:`.app`: the FastAPI app it mounts under ``/mirpanel`` (built on the first request).
- :mod:`.gather`: what the page shows, read from Airflow's metadata DB (never from the panel).
- :mod:`.ledger_keys`: the ledger's state-store keys, read back (pages, the lease).
- :mod:`.access`: who may see what.
- :mod:`.render`: the HTML page with inline SVG charts; :mod:`.twin`: its JSON twin.
"""
