"""Command-line faces (subcommands registered by framepack_cli.py)."""
