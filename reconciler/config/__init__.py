"""The desired-state file: schema, loading, and problems found in it."""

from reconciler.config.load import load, load_text
from reconciler.config.problems import Problem
from reconciler.config.schema import DesiredState

__all__ = ["DesiredState", "Problem", "load", "load_text"]
