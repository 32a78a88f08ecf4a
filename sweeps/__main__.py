"""`python -m sweeps` runs the `sparsesweep` command line."""

from sweeps.cli import main

main()
