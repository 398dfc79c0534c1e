"""The `infinipot` command line: a thin Typer shell over the `infinipot` library."""
