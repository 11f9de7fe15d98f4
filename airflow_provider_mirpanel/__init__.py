"""Apache Airflow provider for MirPanel and every SMM panel serving the Perfect Panel API v2."""

from airflow_provider_mirpanel.client.defaults import DEFAULT_API_URL

__version__ = "0.2.0"

__all__ = ["DEFAULT_API_URL", "__version__"]
