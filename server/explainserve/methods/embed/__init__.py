"""Embed: feature vectors of a layer, projections of a set (registered by name), and receptive
fields for top patches."""
