"""A simulated credential-issuance worker that reports through the SDK, as a real one would.

It reads recipients from a CSV file (`email,name,grade`; row numbers count data lines from 1) or
makes some up, refuses rows whose e-mail or grade is invalid, "issues" a credential for the rest,
sends a notification e-mail that fails now and then (seeded, so a run can be repeated), and counts
a recipient as internal when their e-mail is on the organisation's domain.

    python scripts/demo_worker.py --url http://127.0.0.1:8080 --api-key uc_live_… \
        --recipients scripts/sample_recipients.csv
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from jobtracker.sdk.worker import Job, connect

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
ORG_DOMAIN = "uni.edu"
GRADE_RANGE = (0.0, 10.0)
FIELDS = ("email", "name", "grade")


@attrs.frozen
class Recipient:
    """One line of the recipients file."""

    row: int
    email: str
    name: str
    grade: str


@attrs.frozen
class Simulation:
    """How the simulated outside world behaves."""

    org_domain: str = ORG_DOMAIN
    email_failure_rate: float = 0.05
    seed: int = 1
    #: Seconds of simulated work per row.
    pause: float = 0.0
    #: A `progress` event every this many rows.
    progress_every: int = 5


def read_recipients(path: str | Path) -> list[Recipient]:
    """Recipients from a CSV file with an `email,name,grade` header."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            Recipient(row, line["email"].strip(), line["name"].strip(), line["grade"].strip())
            for row, line in enumerate(csv.DictReader(handle), start=1)
        ]


def write_recipients(path: str | Path, recipients: Iterable[Recipient]) -> None:
    """Write recipients in the form `read_recipients` reads."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FIELDS)
        writer.writerows((r.email, r.name, r.grade) for r in recipients)


def generate_recipients(count: int, seed: int = 1, org_domain: str = ORG_DOMAIN) -> list[Recipient]:
    """`count` made-up recipients: mostly fine, a few bad e-mails and grades, seeded."""
    rng = random.Random(seed)
    people = []
    for row in range(1, count + 1):
        domain = org_domain if rng.random() < 0.6 else rng.choice(("gmail.com", "outlook.com"))
        email = f"persona{row}@{domain}"
        if rng.random() < 0.03:
            email = f"persona{row}@{domain.split('.')[0]}"  # no top-level domain: invalid
        grade = f"{rng.uniform(5, 10):.1f}" if rng.random() > 0.02 else "n/a"
        people.append(Recipient(row, email, f"Persona {row}", grade))
    return people


def demo_recipients() -> list[Recipient]:
    """The 50 recipients of the seed's SUCCESS example: rows 12 and 37 fail, 30 of the 48
    credentials are internal."""
    people = []
    issued = 0
    for row in range(1, 51):
        if row == 12:
            people.append(Recipient(row, "invalido@test", "Invalido", "8.0"))
        elif row == 37:
            people.append(Recipient(row, "duplicado@test.com", "Duplicado", "11"))
        else:
            issued += 1
            domain = ORG_DOMAIN if issued <= 30 else "gmail.com"
            people.append(Recipient(row, f"persona{row}@{domain}", f"Persona {row}", "9.0"))
    return people


def is_internal(email: str, org_domain: str) -> bool:
    """Members of the organisation have an e-mail on its domain (or a subdomain)."""
    domain = email.rpartition("@")[2].lower()
    return domain == org_domain or domain.endswith("." + org_domain)


def row_problem(recipient: Recipient) -> str | None:
    """Why a row cannot be issued, in the platform's words; None when it can."""
    if not EMAIL.fullmatch(recipient.email):
        return f"Invalid email: {recipient.email}"
    try:
        grade = float(recipient.grade)
    except ValueError:
        return "Calificacion invalida"
    low, high = GRADE_RANGE
    return None if low <= grade <= high else "Calificacion invalida"


def issue_credentials(job: Job, recipients: Sequence[Recipient], sim: Simulation) -> None:
    """Process every recipient, reporting each outcome, then mark the job done."""
    rng = random.Random(sim.seed)
    job.started()
    for done, person in enumerate(recipients, start=1):
        problem = row_problem(person)
        if problem is not None:
            job.row_failed(person.row, person.email, problem)
        else:
            job.row_succeeded(person.row, person.email,
                              internal=is_internal(person.email, sim.org_domain))
            if rng.random() < sim.email_failure_rate:
                job.email_failed(person.row, person.email, "SMTP 451: try again later")
            else:
                job.email_sent(person.row, person.email)
        if done % sim.progress_every == 0:
            job.progress(done, len(recipients))
        time.sleep(sim.pause)
    job.succeeded()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", required=True, help="http://host:port, or sqlite:///path.db")
    parser.add_argument("--api-key", help="the key (needed over HTTP, and to create a job)")
    parser.add_argument("--job-id", help="report on this job (default: create one)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--recipients", help="CSV file with an email,name,grade header")
    source.add_argument("--generate", type=int, default=50, help="make up N recipients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--email-failure-rate", type=float, default=0.05)
    parser.add_argument("--org-domain", default=ORG_DOMAIN)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds of work per row")
    parser.add_argument("--batch-size", type=int, default=500)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker from the command line; prints the job id first."""
    args = _parser().parse_args(argv)
    if args.recipients:
        recipients = read_recipients(args.recipients)
    else:
        recipients = generate_recipients(args.generate, args.seed, args.org_domain)
    sim = Simulation(args.org_domain, args.email_failure_rate, args.seed, args.pause)
    with connect(args.url, api_key=args.api_key, batch_size=args.batch_size) as tracker:
        job_id = args.job_id or tracker.create_job(total=len(recipients), label="credentials")
        print(job_id, flush=True)
        with tracker.job(job_id) as job:
            issue_credentials(job, recipients, sim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
