"""Maximize: objectives (registered by name in registry.py; builtin imports them all), the
ascent plan and step kernel, image parameterisations and the priors that regularise them."""
