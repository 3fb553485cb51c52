"""Maximize: objectives (registered by name), the ascent plan and step kernel, image
parameterisations and the priors that regularise them."""
