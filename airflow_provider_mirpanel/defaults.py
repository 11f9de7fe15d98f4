"""Defaults of a ``mirpanel`` connection.

Free of Airflow imports: Airflow reads the provider metadata (which shows these defaults in the
connection form) while it is still importing itself.
"""

DEFAULT_API_URL = "https://mirpanel.com/api/v2"  # the endpoint of a connection with an empty host
DEFAULT_TIMEOUT = 30.0  # seconds to wait for a reply
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds to wait for the TCP/TLS connection
DEFAULT_RETRIES = 5  # further attempts of a read that failed transiently
DEFAULT_BACKOFF = 0.5  # seconds before the first retry; doubles each time, with jitter
DEFAULT_CONCURRENCY = 8  # requests in flight for multi-ID calls
DEFAULT_RATE_LIMIT = 0.0  # requests per minute; 0 = no client-side limit
