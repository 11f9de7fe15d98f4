"""Operators: placing and resolving orders (``orders``), and the rest (``mirpanel``, the one import path)."""
