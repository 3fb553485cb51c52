"""Importing this module registers every built-in Maximize objective."""

from explainserve.methods.maximize import inversion, objectives  # noqa: F401
