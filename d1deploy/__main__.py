"""`python -m d1deploy` runs the command-line interface."""

from d1deploy.cli import main

main()
