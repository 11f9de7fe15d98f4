"""The balance: its history, spend rate and run-out projection (``spending``)."""
