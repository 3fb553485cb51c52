"""Importing this module registers every built-in Embed projection."""

from explainserve.methods.embed import projection  # noqa: F401
