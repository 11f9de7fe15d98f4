"""Sensors: waiting for orders and refills to end, in poke, reschedule or deferrable mode."""
