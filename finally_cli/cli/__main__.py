"""`python -m finally_cli.cli` runs the `finally` command."""

from finally_cli.cli.app import main

main()
