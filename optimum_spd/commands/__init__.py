"""Command-line interface: `optimum-spd ...` and `optimum-cli spd ...` (same commands, same flags)."""
