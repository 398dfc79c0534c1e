"""`python -m infinipot_cli`: the same as the `infinipot` command."""

from infinipot_cli.app import main

main()
