"""`python -m analysis` runs the cd49d command."""

from analysis.cli import main

main()
