"""`python -m jobtracker` runs the command line."""

from jobtracker.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
