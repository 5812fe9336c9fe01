"""Screening records with a compiled evaluator, in this process or in worker processes.

What `crit screen --engine python` runs: batches of records through a generated evaluator's
`assess()`, in order, in N spawned workers with a few batches in flight each. The workers
import this module and what it imports, never the compiler: the evaluator reaches them as
its source text (`Job`) and is loaded with `crit.process.import_evaluator`.
"""

from __future__ import annotations

import collections
import csv
import io
import signal
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from crit import text
from crit.process import import_evaluator
from crit.screening import report
from crit.sources import records as json_records
from crit.sources.cohort import Columns, Item, RowError, syntax_message

COLUMNS = ("record", "id", "decision", "decided_by", "missing", "pending_judgments", "error")
# A batch screened: its rows as text, its decisions, its tally, and its screened records' ids.
Screened = tuple[str, collections.Counter[str], report.Tally | None, tuple[tuple[int, str], ...]]

# ---- screening a batch (in this process or a worker) -------------------------------------------


@dataclass(frozen=True)
class Job:
    """What screening needs, in a form that can be sent to worker processes."""

    module_path: str
    module_name: str
    input_format: str
    output_format: str
    kinds: dict[str, Any]
    header: tuple[str, ...]
    combine: tuple[str, ...]  # per criterion, in CRITERIA order: all, any, at_least
    tally: bool


def result_id(value: Any) -> str | int | None:
    """The id written to the results: text and whole numbers as they are; any other value
    (a decimal, true, a list) as its JSON text, so the output is always strict JSON."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    return text.json_source(value)


def id_key(value: Any) -> str:
    """How two records' ids are compared: as JSON text, so that 7 and "7" are different ids."""
    return text.json_source(value)


def duplicate_id(value: Any, first: int) -> str:
    """The error of a record whose id an earlier screened record (number `first`) gave."""
    return f"id: {text.json_source(value)} is already the id of record {first}"


class Screener:
    """Screens batches of items into output text, decision counts and a report tally."""

    def __init__(self, job: Job) -> None:
        self.job = job
        module = import_evaluator(job.module_path, job.module_name)
        self.assess: Callable[[object], Any] = module.assess
        self.invalid: type[Exception] = module.InvalidRecord
        info = module.CRITERIA
        self.criteria = tuple(report.Criterion(c.id, c.title, c.section, c.parent) for c in info)
        self.ids = tuple(c.id for c in info)
        position = {c.id: i for i, c in enumerate(info)}
        self.tops = tuple((i, c.section == "inclusion") for i, c in enumerate(info) if c.parent is None)
        self.children: dict[int, list[int]] = collections.defaultdict(list)
        for i, c in enumerate(info):
            if c.parent is not None:
                self.children[position[c.parent]].append(i)
        self.outcome = module.Outcome
        self.decision = module.Decision
        self.columns = Columns(job.header, job.kinds) if job.input_format == "csv" else None

    def run(self, batch: Sequence[Item], duplicates: Mapping[int, int] | None = None) -> Screened:
        """The batch's rows as text, its decisions, its tally (unflushed: the outcome vectors are
        folded once, at the end) and the ids of its screened records, `(record, id_key(id))`, for
        the caller to find ids given twice. `duplicates` maps a record's number to the earlier
        record that gave its id: that record is an error row (`duplicate_id`)."""
        tally = report.Tally(self.criteria) if self.job.tally else None
        decisions: collections.Counter[str] = collections.Counter()
        ids: list[tuple[int, str]] = []
        rows = [self.one(item, tally, decisions, ids, duplicates or {}) for item in batch]
        return self.text(rows), decisions, tally, tuple(ids)

    def one(self, item: Item, tally: report.Tally | None, decisions: collections.Counter[str],
            ids: list[tuple[int, str]], duplicates: Mapping[int, int]) -> tuple[Any, ...]:
        number, line, payload, problem = item
        record_id: Any = self.columns.id_of(payload) if self.columns is not None and isinstance(payload, list) else None
        if problem is not None and self.job.input_format == "fhir" and isinstance(payload, bytes):
            record_id = json_records.loads(payload.decode("utf-8")).get("id")  # a FHIR patient with problems
        if problem is None:
            try:
                record = self.parse(payload, line)
                if isinstance(record, dict):
                    record_id = record.get("id")
                assessed = self.assess(record)
            except RowError as err:
                problem = str(err)
            except self.invalid as err:
                problem = str(err)
        if problem is None and record_id is not None:
            if number in duplicates:
                problem = duplicate_id(record_id, duplicates[number])
            else:
                ids.append((number, id_key(record_id)))
        shown = result_id(record_id)
        if problem is not None:
            decisions[report.ERROR] += 1
            if tally is not None:
                tally.add_error(number, "" if shown is None else str(shown), problem)
            return number, shown, report.ERROR, (), (), (), problem
        decision = assessed.decision.value
        decisions[decision] += 1
        if tally is not None:
            tally.add(decision, "|".join(assessed.outcomes), assessed.missing + assessed.pending_judgments,
                      f"record {number}" if shown is None or shown == "" else str(shown))
        return (number, shown, decision, self.decided_by(assessed), assessed.missing,
                assessed.pending_judgments, None)

    def parse(self, payload: bytes | list[str] | None, line: int) -> Any:
        if self.columns is not None:
            assert isinstance(payload, list)
            try:
                return self.columns.record(payload)
            except RowError as err:
                raise RowError(f"line {line}: {err}") from None
        assert isinstance(payload, bytes)
        try:
            decoded = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            at = line + payload.count(b"\n", 0, err.start)
            raise RowError(f"line {at}: not valid UTF-8 (byte {payload[err.start]:#04x})") from None
        try:
            return json_records.loads(decoded)
        except json_records.RecordSyntaxError as err:
            raise RowError(syntax_message(err, line, self.job.input_format)) from None

    def decided_by(self, assessed: Any) -> tuple[str, ...]:
        """The top-level criteria that decided an ineligible or needs-review patient, each
        followed by the sub-criteria (under an `all`) that made it so."""
        decision = assessed.decision
        if decision is self.decision.ELIGIBLE:
            return ()
        outcomes = assessed.outcomes
        refused = decision is self.decision.INELIGIBLE
        out: list[str] = []
        for index, inclusion in self.tops:
            value = outcomes[index]
            if refused:
                hit = value is (self.outcome.NOT_MET if inclusion else self.outcome.MET)
            else:  # unknown, and not only between not refusing and not applying
                hit = value is self.outcome.UNKNOWN or value is (
                    self.outcome.NOT_MET_OR_NOT_APPLICABLE if inclusion else self.outcome.MET_OR_NOT_APPLICABLE)
            if hit:
                self.drill(index, value, outcomes, out)
        return tuple(out)

    def drill(self, index: int, value: Any, outcomes: Sequence[Any], out: list[str]) -> None:
        out.append(self.ids[index])
        if self.job.combine[index] == "all" and value in (self.outcome.NOT_MET, self.outcome.UNKNOWN):
            for child in self.children.get(index, ()):
                if outcomes[child] is value:
                    self.drill(child, value, outcomes, out)

    def text(self, rows: list[tuple[Any, ...]]) -> str:
        """The rows as CSV (every cell neutralised against formulas) or as strict JSON, one
        object per line."""
        if self.job.output_format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)  # csv leaves a lone \r bare
            cell = text.csv_cell
            for number, record_id, decision, decided, missing, pending, error in rows:
                row = (number, cell(record_id), cell(decision), cell(";".join(decided)), cell(";".join(missing)),
                       cell(";".join(pending)), cell(error))
                (quoted if any("\r" in str(c) for c in row) else writer).writerow(row)
            return buffer.getvalue()
        return "".join(
            text.json_text(dict(zip(COLUMNS, (n, i, d, list(by), list(m), list(p), e), strict=True))) + "\n"
            for n, i, d, by, m, p, e in rows)




IN_FLIGHT = 3  # batches handed to each worker process before its first result is collected


def _serve(job: Job, connection: Any) -> None:
    """A worker process: screens the batches it receives, in order, until its connection
    closes. A thread takes the batches in as they come, so that the main process never waits
    to hand one over while this one waits to hand back a result. It leaves Ctrl-C to the main
    process, which stops it: no worker traceback."""
    import queue
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    screener = Screener(job)
    inbox: queue.SimpleQueue[list[Item] | None] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                inbox.put(connection.recv())
            except (EOFError, OSError):
                inbox.put(None)
                return

    threading.Thread(target=receive, daemon=True).start()
    while True:
        batch = inbox.get()
        if batch is None:
            return
        try:
            screened: Screened | Exception = screener.run(batch)
        except Exception as err:  # a bug: the main process reports it, as for one process
            screened = err
        connection.send(screened)


def batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def screen_batches(job: Job, batches: Iterator[list[Item]], jobs: int) -> Generator[Screened, None, None]:
    """The screened batches, in input order. With several jobs, each worker process has its
    own pipe; batches are handed out in turn, at most IN_FLIGHT per worker, and collected in
    the same order, so the input is read only as fast as results are written. The workers
    share no lock, so killing one (or all, as SIGTERM to the process group does) cannot hang
    the rest; close the generator (or exhaust it) and every worker is stopped and reaped."""
    if jobs <= 1:
        screener = Screener(job)
        for batch in batches:
            yield screener.run(batch)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited threads or open files
    workers: list[tuple[Any, Any]] = []
    # The workers are born with Ctrl-C ignored (an ignored signal stays ignored across exec), so
    # that none prints a traceback, even while it starts; the main process stops them. Ctrl-C
    # in the few milliseconds it takes to start them is lost: press it again.
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for _ in range(jobs):
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(job, theirs), daemon=True)
            workers.append((process, mine))
            process.start()
            theirs.close()
    finally:
        signal.signal(signal.SIGINT, ignored)
    finished = False
    try:
        busy: collections.deque[tuple[Any, Any]] = collections.deque()  # in the order handed out
        for number, batch in enumerate(batches):
            if len(busy) >= IN_FLIGHT * jobs:
                yield _collect(*busy.popleft())
            process, connection = workers[number % jobs]
            connection.send(batch)
            busy.append((process, connection))
        while busy:
            yield _collect(*busy.popleft())
        finished = True
    finally:
        for process, connection in workers:
            connection.close()  # a worker waiting for work ends on its own
            if not finished:
                process.kill()  # an interrupted one is stopped mid-batch
        for process, _ in workers:
            process.join()


def _collect(process: Any, connection: Any) -> Screened:
    try:
        result: Screened | Exception = connection.recv()
    except (EOFError, OSError):
        process.join(1)
        raise RuntimeError(f"a screening process stopped unexpectedly (exit code {process.exitcode})") from None
    if isinstance(result, Exception):
        raise result
    return result
