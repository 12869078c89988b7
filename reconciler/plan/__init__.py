"""Observe → plan → apply."""
