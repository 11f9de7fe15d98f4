"""The hostname a Celery worker of ``make e2e-celery`` reports for its task instances.

Both workers run on one machine, where Airflow's default (``socket.getfqdn``) would give them one
name. Each worker's environment names it (``MIRPANEL_E2E_WORKER_HOSTNAME``, its Celery hostname
``worker1@<host>``) and sets ``[core] hostname_callable`` to :func:`hostname`, so a task instance's
``hostname`` in the REST API says which worker ran it — as it would with one worker per machine.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("MIRPANEL_E2E_WORKER_HOSTNAME") or socket.getfqdn()
