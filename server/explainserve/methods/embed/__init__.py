"""Embed: feature vectors of a layer, projections of a set (registered by name in registry.py;
builtin imports them all), and receptive fields for top patches."""
