"""Apache Airflow provider for MirPanel and every SMM panel serving the Perfect Panel API v2."""

__version__ = "0.1.0"

#: The API endpoint a connection with an empty host talks to. Kept here, free of Airflow imports,
#: because Airflow reads the provider metadata while it is still importing itself.
DEFAULT_API_URL = "https://mirpanel.com/api/v2"
