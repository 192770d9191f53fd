"""Replay's fold: the log's stored rows, in position order, straight into job states.

`projection.apply_event` decides every transition; this module only makes replay cheap. Each
stored row's JSON is read (an object, or SQLite's positional array), and the events nearly every
row of a big log holds (a row's outcome, an e-mail's outcome, a progress report), when they are in
today's shape and plainly valid, are applied inline to a mutable per-job draft, without building
an event object. Anything else (another type, an older shape, a field in doubt, a second outcome,
one past the total, a finished job) is decoded in full and handed to `projection.apply_event`,
which applies it or raises exactly as it does for a live append. A job's frozen `JobState` is
built once, when it finishes or the log ends. A property test holds this fold to
`projection.fold` for arbitrary histories.

PostgreSQL's log holds a row per batch (one job's events of one commit); its scans hand the fold
`BatchedRows`, which it folds batch by batch (`fold_batches`): the job looked up and its version
checked once per run of row and e-mail outcomes, their counters kept in locals, no tuple built
per event. The same property test holds that path to `projection.fold`, batches cut anywhere.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence, Set
from typing import Any, overload

import orjson

from jobtracker.domain.codec import StoredRow, decode_stored
from jobtracker.domain.errors import JobtrackerError, UnreadableLog
from jobtracker.domain.events import MAX_EMAIL, MAX_INT, MAX_TEXT, Created, Event
from jobtracker.domain.projection import Draft, apply_event, start
from jobtracker.domain.state import JobState, Progress, RowError, RowMark, Status
from jobtracker.domain.stored import form_of
from jobtracker.domain.upcast import current_version

#: Rows below this are kept as bits (2**26 rows = 8 MiB per kind at most); rarer, larger row
#: numbers go in a set.
DENSE_ROWS = 1 << 26
#: A row error to store: (job_id, row, email, error).
ErrorRow = tuple[str, int, str, str]
#: A run of one job's events at consecutive versions and positions (a PostgreSQL `log` row, or
#: part of one): (job_id, first_version, first_position, forms, data). `forms`: each event's
#: one-byte form (`stored.form_code`), or where a form has no byte, its (type, schema version);
#: `data`: each event's stored JSON.
Batch = tuple[str, int, int, bytes | Sequence[tuple[str, int]], Sequence[str]]
#: One 64-row word of a job's marks: (kind, chunk, bits), `chunk` being `row >> 6`, bit
#: `row & 63` set for each marked row; unsigned.
MarkWord = tuple[str, int, int]


class RowMarks(Set[RowMark]):
    """One job's row marks in little memory: a bit per row and kind, a set for huge row numbers."""

    __slots__ = ("_email", "_far", "_outcome")

    def __init__(self) -> None:
        self._outcome = bytearray()
        self._email = bytearray()
        self._far: set[RowMark] = set()

    def __contains__(self, mark: object) -> bool:
        row: int
        kind: str
        row, kind = mark  # type: ignore[misc]
        if row >= DENSE_ROWS:
            return mark in self._far
        bits = self._outcome if kind == "outcome" else self._email
        byte = row >> 3
        return byte < len(bits) and bool(bits[byte] >> (row & 7) & 1)

    def add(self, mark: RowMark) -> None:
        """Record a mark (the fold has already refused a second one for the same row)."""
        self.update((mark,))

    def update(self, marks: Sequence[RowMark]) -> None:
        """Record many marks."""
        for mark in marks:
            row, kind = mark
            if row >= DENSE_ROWS:
                self._far.add(mark)
                continue
            _set_bit(self._outcome if kind == "outcome" else self._email, row)

    def __len__(self) -> int:
        # Counted when asked (once per finished job), not kept up per mark on the fold's path.
        bits = (int.from_bytes(self._outcome, "little").bit_count()
                + int.from_bytes(self._email, "little").bit_count())
        return bits + len(self._far)

    def __iter__(self) -> Iterator[RowMark]:
        for kind, bits in (("outcome", self._outcome), ("email", self._email)):
            for byte, value in enumerate(bits):
                for bit in range(8):
                    if value >> bit & 1:
                        yield RowMark(byte * 8 + bit, kind)  # type: ignore[arg-type]
        yield from self._far

    def words(self) -> Iterator[MarkWord]:
        """The marks as 64-row words, only those with a bit set: what the SQL stores keep."""
        for kind, bits in (("outcome", self._outcome), ("email", self._email)):
            for chunk, first in enumerate(range(0, len(bits), 8)):
                if word := int.from_bytes(bits[first:first + 8], "little"):
                    yield kind, chunk, word
        far: dict[tuple[str, int], int] = {}
        for row, kind in self._far:
            far[kind, row >> 6] = far.get((kind, row >> 6), 0) | 1 << (row & 63)
        for (kind, chunk), word in far.items():
            yield kind, chunk, word


def _set_bit(bits: bytearray, row: int) -> None:
    byte = row >> 3
    if byte >= len(bits):
        # Doubling: a job's rows mostly come in order, so its bytes grow a few at a time.
        bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
    bits[byte] |= 1 << (row & 7)


class OpenJob:
    """A job the fold has seen but that has not finished yet."""

    __slots__ = ("draft", "marks", "position")

    def __init__(self, state: JobState, position: int) -> None:
        self.draft = Draft(state)
        self.marks = RowMarks()
        self.position = position


#: A job the fold is done with: its state, the position of its last event, its row marks.
Finished = tuple[JobState, int, RowMarks]

#: The events applied inline, by type: the schema version they must be stored at (an older one
#: takes the full path, which upcasts it), how many fields they have, whether they are a row's
#: outcome (else an e-mail's), whether they are a failure, and the field checked beside `row`
#: and `email`.
_INLINE: dict[str, tuple[int, int, bool, bool, str | None]] = {
    "row_succeeded": (current_version("row_succeeded"), 3, True, False, "internal"),
    "row_failed": (current_version("row_failed"), 3, True, True, "error"),
    "email_sent": (current_version("email_sent"), 2, False, False, None),
    "email_failed": (current_version("email_failed"), 3, False, True, "error"),
}
_PROGRESS_V = current_version("progress")
_SUCCESS, _FAILURE, _PROGRESS = Status.SUCCESS, Status.FAILURE, Status.PROGRESS


class LogFold:
    """Folds stored rows, in position order, into finished jobs and row errors.

    `fold` may be called with the log in chunks of any size; `take` hands over what is ready
    to be written; `drain` finishes every job still open (the end of the log was reached).
    """

    def __init__(self) -> None:
        self._open: dict[str, OpenJob] = {}
        self._finished: list[Finished] = []
        self._errors: list[ErrorRow] = []
        self.events = 0
        self.jobs = 0
        self.statuses: Counter[str] = Counter()

    def take(self) -> tuple[list[Finished], list[ErrorRow]]:
        """The jobs finished and the row errors met since the last call."""
        taken = self._finished, self._errors
        self._finished, self._errors = [], []
        return taken

    def drain(self) -> None:
        """Finish every job still open, as it stands."""
        for job_id in list(self._open):
            self._finish(job_id)

    def fold(self, rows: Iterable[StoredRow]) -> None:
        """Fold stored rows (job_id, version, position, type, schema_version, data).

        One loop with the common transitions written out: it runs once per event of the log, and
        a function call per event would cost more than most of the checks it would hold.
        """
        if isinstance(rows, BatchedRows):
            self.fold_batches(rows.batches)
            return
        jobs, loads, errors, inline, count = self._open, orjson.loads, self._errors, _INLINE, 0
        for row in rows:
            count += 1
            job_id, version, position, kind, schema, data = row
            job = jobs.get(job_id)
            if job is None:
                self._start(row)
                continue
            draft = job.draft
            if version != draft.version + 1:
                _gap(job_id, version, position, draft.version + 1)
            job.position = position
            fields = loads(data)
            # An open job is never finished (`_apply` closes it at once), so only the event's
            # own shape, its row's marks and the job's total decide whether it applies inline.
            rule = inline.get(kind)
            shape = fields.__class__
            if (rule is not None and rule[0] == schema and (shape is list or shape is dict)
                    and len(fields) == rule[1]):
                _, size, outcome, failed, extra_key = rule
                extra: Any
                if shape is list:  # SQLite's positional form: row, email[, extra]
                    number, email = fields[0], fields[1]
                    extra = fields[2] if size == 3 else None
                    if extra_key == "internal":  # a flag, stored as 1 or 0
                        extra = (extra == 1 if extra.__class__ is int and (extra == 0 or extra == 1)
                                 else None)
                else:
                    number, email = fields.get("row"), fields.get("email")
                    extra = fields.get(extra_key)
                if (number.__class__ is int and 0 <= number < DENSE_ROWS
                        and email.__class__ is str and 0 < len(email) <= MAX_EMAIL
                        and "\x00" not in email
                        and (extra.__class__ is str and 0 < len(extra) <= MAX_TEXT
                             and "\x00" not in extra if failed
                             else extra.__class__ is bool or not outcome)):
                    marks = job.marks
                    bits = marks._outcome if outcome else marks._email
                    byte, bit = number >> 3, 1 << (number & 7)
                    if byte >= len(bits):
                        # As `_set_bit` grows it.
                        bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
                    total = draft.base.expected_total
                    if not bits[byte] & bit and (
                            not outcome or total is None
                            or draft.successful + draft.failed < total):
                        bits[byte] |= bit
                        draft.version += 1
                        draft.status = _PROGRESS
                        if not outcome:
                            if failed:
                                draft.emails_failed += 1
                            else:
                                draft.emails_sent += 1
                        elif failed:
                            draft.failed += 1
                            errors.append((job_id, number, email, extra))
                        else:
                            draft.successful += 1
                            if extra:
                                draft.internal_count += 1
                            else:
                                draft.external_count += 1
                        continue
            elif kind == "progress" and schema == _PROGRESS_V and _progress(draft, fields):
                continue
            self._apply(job_id, job, kind, schema, data)
        self.events += count

    def fold_batches(self, batches: Iterable[Batch]) -> None:
        """Fold batches, in position order: the same as `fold` over their events, one by one.

        A batch is one job's, so the job is looked up, and its version checked, once per run of
        events `_run` applies inline; every other event (a job's first, another type, an odd
        shape or value, one the job refuses) goes through `fold`, alone.
        """
        jobs, fold = self._open, self.fold
        for job_id, version, position, forms, data in batches:
            n, i = len(data), 0
            while i < n:
                job = jobs.get(job_id)
                if (job is not None and isinstance(forms, bytes)
                        and version + i == job.draft.version + 1):
                    i = self._run(job_id, job, position, forms, data, i)
                    if i == n:
                        break
                kind, schema = _form_at(forms, i)
                fold(((job_id, version + i, position + i, kind, schema, data[i]),))
                i += 1

    def _run(
        self, job_id: str, job: OpenJob, position: int, codes: bytes, data: Sequence[str], i: int
    ) -> int:
        """Apply a batch's events from `i` on inline while they are row and e-mail outcomes in
        today's positional shape, plainly valid; the index of the first one left to `fold`.

        `fold`'s inline path, with the job's counters in locals (written back once): the same
        checks, in the same order of effect."""
        draft, marks, errors, loads, rules = (job.draft, job.marks, self._errors, orjson.loads,
                                              _RULES)
        outcome_bits, email_bits = marks._outcome, marks._email
        total = draft.base.expected_total
        counted = draft.successful + draft.failed
        failed, internal, external = 0, 0, 0
        sent, bounced = draft.emails_sent, draft.emails_failed
        start, n = i, len(data)
        extra: Any
        while i < n:
            rule = rules[codes[i]]
            if not rule:
                break
            fields = loads(data[i])
            if fields.__class__ is not list:
                break
            if rule == _EMAIL_SENT:  # row, email
                if len(fields) != 2:
                    break
                number, email = fields
                bits = email_bits
            elif rule == _ROW_SUCCEEDED:  # row, email, internal (a flag stored as 1 or 0)
                if len(fields) != 3:
                    break
                number, email, extra = fields
                if not (extra.__class__ is int and (extra == 0 or extra == 1)):
                    break
                bits = outcome_bits
            else:  # a failure: row, email, error
                if len(fields) != 3:
                    break
                number, email, extra = fields
                if not (extra.__class__ is str and 0 < len(extra) <= MAX_TEXT
                        and "\x00" not in extra):
                    break
                bits = outcome_bits if rule == _ROW_FAILED else email_bits
            if not (number.__class__ is int and 0 <= number < DENSE_ROWS
                    and email.__class__ is str and 0 < len(email) <= MAX_EMAIL
                    and "\x00" not in email):
                break
            byte, bit = number >> 3, 1 << (number & 7)
            try:
                value = bits[byte]
            except IndexError:
                bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))  # as `_set_bit`
                value = 0
            if value & bit:
                break
            if bits is outcome_bits:
                if total is not None and counted >= total:
                    break
                counted += 1
                if rule == _ROW_FAILED:
                    failed += 1
                    errors.append((job_id, number, email, extra))
                elif extra:
                    internal += 1
                else:
                    external += 1
            elif rule == _EMAIL_SENT:
                sent += 1
            else:
                bounced += 1
            bits[byte] = value | bit
            i += 1
        if i > start:
            draft.version += i - start
            draft.status = _PROGRESS
            draft.successful += internal + external
            draft.failed += failed
            draft.internal_count += internal
            draft.external_count += external
            draft.emails_sent, draft.emails_failed = sent, bounced
            job.position = position + i - 1
            self.events += i - start
        return i

    def _apply(self, job_id: str, job: OpenJob, kind: str, schema: int, data: str) -> None:
        """The full path: decode the event and let the projection's own rules apply it."""
        event = decode_stored(kind, schema, data)
        marks: list[RowMark] = []
        row_errors: list[RowError] = []
        try:
            apply_event(job.draft, event, job.marks, frozenset(), marks, row_errors, "")
        except JobtrackerError as exc:
            raise UnreadableLog(
                f"job {job_id}: the event at position {job.position} cannot be folded: "
                f"{exc.detail}"
            ) from None
        job.marks.update(marks)
        self._errors.extend([(job_id, *error) for error in row_errors])
        if job.draft.status is _SUCCESS or job.draft.status is _FAILURE:
            self._finish(job_id)

    def _start(self, row: StoredRow) -> None:
        job_id, version, position, kind, schema, data = row
        event: Event | None = decode_stored(kind, schema, data) if version == 1 else None
        if not isinstance(event, Created):
            raise UnreadableLog(
                f"job {job_id}: the replay has no state for it at position {position} "
                f"(version {version}): its history lacks a 'created' event, or has a gap, "
                "or goes on after the job finished"
            )
        try:
            state = start(job_id, event)
        except JobtrackerError as exc:
            raise UnreadableLog(
                f"job {job_id}: its 'created' event at position {position} cannot be folded: "
                f"{exc.detail}"
            ) from None
        self._open[job_id] = OpenJob(state, position)
        self.jobs += 1

    def _finish(self, job_id: str) -> None:
        job = self._open.pop(job_id)
        state = job.draft.freeze()
        self._finished.append((state, job.position, job.marks))
        self.statuses[state.status.value] += 1


#: Each one-byte form's (type, schema version); a byte no type has reads as an unknown type,
#: which `decode_stored` refuses by name.
_FORM: tuple[tuple[str, int], ...] = tuple(form_of(code) for code in range(256))
#: The events `_run` applies inline, as small numbers (0: none; only at today's schema version).
_ROW_SUCCEEDED, _ROW_FAILED, _EMAIL_SENT, _EMAIL_FAILED = 1, 2, 3, 4
_RUN_KINDS = {"row_succeeded": _ROW_SUCCEEDED, "row_failed": _ROW_FAILED,
              "email_sent": _EMAIL_SENT, "email_failed": _EMAIL_FAILED}
#: Each one-byte form's number in `_RUN_KINDS`, or 0: always `fold`.
_RULES: tuple[int, ...] = tuple(
    _RUN_KINDS[kind] if kind in _RUN_KINDS and schema == current_version(kind) else 0
    for kind, schema in _FORM
)


def _form_at(forms: bytes | Sequence[tuple[str, int]], i: int) -> tuple[str, int]:
    return _FORM[forms[i]] if isinstance(forms, bytes) else forms[i]


class BatchedRows(Sequence[StoredRow]):
    """Stored rows held as batches (`Batch`): what a scan of PostgreSQL's lean log returns.

    Reads as the sequence of its events' `StoredRow`s; `LogFold.fold` folds it batch by batch
    without building them."""

    __slots__ = ("_ends", "batches")

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        ends, count = [], 0
        for batch in batches:
            count += len(batch[4])
            ends.append(count)
        self._ends = ends

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> StoredRow: ...
    @overload
    def __getitem__(self, index: slice) -> BatchedRows: ...
    def __getitem__(self, index: int | slice) -> StoredRow | BatchedRows:
        if isinstance(index, slice):
            low, high, step = index.indices(len(self))
            if step != 1:
                raise ValueError("batched rows are sliced with a step of 1 only")
            return BatchedRows(self._cut(low, high))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("batched rows: index out of range")
        which = bisect_right(self._ends, index)
        job_id, version, position, forms, data = self.batches[which]
        i = index - (self._ends[which] - len(data))
        kind, schema = _form_at(forms, i)
        return job_id, version + i, position + i, kind, schema, data[i]

    def __iter__(self) -> Iterator[StoredRow]:
        for job_id, version, position, forms, data in self.batches:
            for i, text in enumerate(data):
                kind, schema = _form_at(forms, i)
                yield job_id, version + i, position + i, kind, schema, text

    def _cut(self, low: int, high: int) -> list[Batch]:
        """The batches' events from `low` to `high`, as batches."""
        cut: list[Batch] = []
        which = bisect_right(self._ends, low)
        while low < high and which < len(self.batches):
            job_id, version, position, forms, data = self.batches[which]
            first = self._ends[which] - len(data)
            start, stop = low - first, min(high, self._ends[which]) - first
            if start == 0 and stop == len(data):
                cut.append(self.batches[which])
            else:
                cut.append((job_id, version + start, position + start, forms[start:stop],
                            data[start:stop]))
            low, which = first + stop, which + 1
        return cut


def _progress(draft: Draft, fields: object) -> bool:
    """Apply a plainly valid progress report in today's shape; False: leave it to the full path."""
    if fields.__class__ is list:  # SQLite's positional form: current, total[, status]
        values: list[object] = fields
        if not 2 <= len(values) <= 3:
            return False
        current, total, status = values[0], values[1], values[2] if len(values) == 3 else None
    elif fields.__class__ is dict:
        keyed: dict[str, object] = fields
        if len(keyed) != 3:
            return False
        current, total, status = keyed.get("current"), keyed.get("total"), keyed.get("status", 0)
    else:
        return False
    if not (current.__class__ is int and total.__class__ is int
            and 0 <= current <= total <= MAX_INT
            and (status is None or (status.__class__ is str and len(status) <= MAX_TEXT
                                    and "\x00" not in status))):
        return False
    draft.version += 1
    draft.status = _PROGRESS
    draft.progress = Progress(current, total, status)
    return True


def _gap(job_id: str, version: int, position: int, expected: int) -> None:
    raise UnreadableLog(
        f"job {job_id}: position {position} holds version {version} where version {expected} "
        "should follow: the log has a gap"
    )
