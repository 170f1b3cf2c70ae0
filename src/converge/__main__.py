"""``python -m converge`` runs the command line."""

from converge.cli import main

main()
