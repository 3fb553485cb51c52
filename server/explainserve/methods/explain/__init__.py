"""Explain: one module per attribution method; builtin imports them all, and each registers itself."""
