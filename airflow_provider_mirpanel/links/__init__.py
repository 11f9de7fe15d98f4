"""Extra links of the operators: the panel's page of a placed order (``order_page``).

Importing this package gives what the former module ``airflow_provider_mirpanel.links`` gave.
"""

from airflow_provider_mirpanel.links.order_page import *  # noqa: F403
