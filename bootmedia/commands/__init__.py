"""One module per CLI subcommand; see bootmedia.cli."""
