"""Orchestration per feature: turn a validated query into kernel rows, await `ctx.run`, and
reduce the results (explain, maximize, embed)."""
