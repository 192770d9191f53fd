"""The simulated credential-issuance worker (see `jobtracker.demo_worker`); run with --help."""

from jobtracker.demo_worker import main

if __name__ == "__main__":
    raise SystemExit(main())
