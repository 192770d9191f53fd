"""The simulated credential-issuance worker (see `jobtracker.cli.demo_worker`); run with --help."""

from jobtracker.cli.demo_worker import main

if __name__ == "__main__":
    raise SystemExit(main())
