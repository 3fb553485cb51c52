"""Command-line entry points: the parser (main) and one module per command; they speak to a
server through the thin client, except `serve`, which runs one."""
