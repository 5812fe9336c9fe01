"""`crit screen --engine duckdb` and `--engine spark`: a cohort screened by the protocol's SQL.

The rows written are those of the Python engine (`crit.screening.python_engine`): the same
columns, one per record, in input order, the same error messages, the same report. The work is
done in two passes.

1. **Reading and checking.** JSON Lines, JSON and CSV records are read by the readers the Python
   engine uses and checked by the generated module's `validate()`: a record with a problem, or
   whose id an earlier readable record gave, is an error row with the message the Python engine
   gives; a readable one becomes rows of the layout tables (`crit.sources.tables.rows`), keyed by
   its record number, written to temporary CSV files that DuckDB loads. A Parquet cohort (typed
   columns in the layout of `crit schema --sql`, one file or directory per table) is checked in
   SQL: the file's columns and types must be the layout's (else the cohort is unreadable, exit
   3); values no column type rules out (a number out of range, an enum value that is no member,
   a lab value without its upper limit, a value outside its field's plausible range, an interval
   without its start, ending before it starts or ongoing with an end, a dated result without its
   date or a date without its result, a date YYYY-MM-DD cannot write, a value beside `F__none`
   true, a list whose item rows do not match its count, a duplicated or missing patient id) are
   found by one query per table, and only the rows it finds are read into Python, where the
   runtime's own readers word the message. A record with a problem is never screened: it is an
   error row. An interval's `F__ongoing` NULL beside a start reads as false, as a record's
   absent `"ongoing"` does.
2. **Screening.** The protocol's SQL (`crit.backends.sql.emit_sql`, in the engine's dialect) runs
   over the tables of the readable records; its rows are joined to pass 1's records and read
   back in record order, and written by the Python engine's own `Screener.text`, its decided-by
   rule and the report's `Tally`.

DuckDB runs embedded, on a database file in a temporary directory (so a large cohort spills to
disk rather than filling memory). Spark runs through pyspark (`pip install 'crit[spark]'`), on
`--master` (default `local[N]`, N from `--jobs`), reading Parquet only.
"""

from __future__ import annotations

import abc
import collections
import datetime
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, assert_never

import click
from sqlglot import exp, parse_one, transpile

from crit import ir, text
from crit import runtime as rt
from crit.backends.sql import emit_sql
from crit.process import import_evaluator
from crit.screening import report
from crit.screening.python_engine import Job, Screened, Screener, duplicate_id, id_key, result_id
from crit.sources import records as json_records
from crit.sources import tables
from crit.sources.cohort import Item, RowError

BATCH = 2_000  # result rows read back and written at a time
RECORD = "__crit_record"  # the record number column added to the raw patients table
RECORDS = "__crit_records"  # record, patient_id, shown id, error: one row per input record
ERRORS = "__crit_errors"  # record, error: the records a Parquet check refused
RAW = "__crit_raw__"  # prefix of the raw (unchecked) Parquet tables
# Physical types a Parquet column may have for each kind of layout column (normalised names).
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "key": ("varchar",),
    "text": ("varchar",),
    "ordinal": ("tinyint", "smallint", "integer", "bigint"),
    "integer": ("tinyint", "smallint", "integer", "bigint"),
    "decimal": ("tinyint", "smallint", "integer", "bigint", "decimal"),
    "bool": ("boolean",),
    "date": ("date",),
}
_LIMIT = 10 ** 15  # records' numbers lie strictly within ±10^15 (the runtime's limit)
_TITER_MAX = 999_999_999  # the runtime reads a titer 1:N with N of at most 9 digits
DRIVER_MEMORY = "4g"  # Spark's driver heap (spark.driver.memory)
READ_PARTITIONS = 64  # at least this many partitions of a shuffle's output (the results' sort)
CHECKPOINT_EVERY = 2  # Spark plans at most this many levels of a protocol's query at once


class CohortError(Exception):
    """A cohort the engine cannot read at all (a Parquet file missing, a column of the wrong
    type): one line for the user, exit 3."""


# ---- SQL text ---------------------------------------------------------------------------------


def ident(name: str) -> str:
    """An identifier, quoted by sqlglot (DuckDB's quoting; transpiled for the other engines)."""
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def literal(value: str) -> str:
    return exp.Literal.string(value).sql("duckdb")


class Engine(abc.ABC):
    """What the screening needs of an SQL engine: run a statement, read a query's rows, see a
    table's columns, and register tables."""

    dialect = "duckdb"

    def sql(self, duckdb_sql: str) -> str:
        """A statement written in DuckDB's dialect, in this engine's."""
        return duckdb_sql

    @abc.abstractmethod
    def execute(self, statement: str) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def rows(self, query: str, stream: bool = False) -> Iterator[tuple[Any, ...]]:
        """The query's rows; `stream` for many (the results), read a part at a time."""
        raise NotImplementedError

    @abc.abstractmethod
    def types(self, table: str) -> dict[str, str]:
        """The table's columns and their types, as lowercase names without parameters
        (`decimal`, `bigint`), with the scale of decimals: {"ck": "decimal(32,17)"}."""
        raise NotImplementedError

    @abc.abstractmethod
    def parquet(self, table: str, location: Path, numbered: bool) -> None:
        """`table` as a view of the Parquet file or directory; with `numbered`, with a RECORD
        column numbering its rows from 1 in file order."""
        raise NotImplementedError

    @abc.abstractmethod
    def values(self, table: str, columns: Sequence[tuple[str, str]], rows: list[tuple[Any, ...]],
               scratch: Path) -> None:
        """A table holding `rows` (columns as (name, SQL type))."""
        raise NotImplementedError

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the engine (its temporary files go with the screen's directory)."""


def _csv_value(value: object) -> str:
    """One cell of the temporary CSV files: NULL as \\N (unquoted), anything else quoted, so
    that text reading `\\N` is text; exact decimals in plain notation."""
    if value is None:
        return "\\N"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Decimal):
        shown = format(value, "f")
    elif isinstance(value, datetime.date):
        shown = value.isoformat()
    else:
        shown = str(value)
    return '"' + shown.replace('"', '""') + '"'


def csv_line(values: Sequence[object]) -> str:
    return ",".join(map(_csv_value, values)) + "\n"


class DuckDB(Engine):
    dialect = "duckdb"

    def __init__(self, directory: Path, threads: int) -> None:
        import duckdb

        self.con = duckdb.connect(str(directory / "screen.duckdb"))
        self.con.execute(f"SET temp_directory = {literal(str(directory / 'spill'))}")
        self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute("SET preserve_insertion_order = true")

    def execute(self, statement: str) -> None:
        self.con.execute(statement)

    def rows(self, query: str, stream: bool = False) -> Iterator[tuple[Any, ...]]:
        cursor = self.con.execute(query)
        while True:
            chunk = cursor.fetchmany(BATCH)
            if not chunk:
                return
            yield from chunk

    def types(self, table: str) -> dict[str, str]:
        described = self.con.execute(f"DESCRIBE {ident(table)}").fetchall()
        return {str(name): _normal_type(str(kind)) for name, kind, *_ in described}

    def parquet(self, table: str, location: Path, numbered: bool) -> None:
        files = sorted(p for p in location.rglob("*.parquet") if p.is_file()) if location.is_dir() else [location]
        if not files:
            raise CohortError(f"{location} holds no Parquet file")
        if not numbered:
            listed = "[" + ", ".join(literal(str(f)) for f in files) + "]"
            self.con.execute(f"CREATE VIEW {ident(table)} AS SELECT * FROM read_parquet({listed})")
            return
        # Record numbers in file order: each file's row numbers, after the rows of the files before it.
        parts, offset = [], 0
        for f in files:
            count = self.con.execute(f"SELECT count(*) FROM read_parquet({literal(str(f))})").fetchone()
            parts.append(f"SELECT * EXCLUDE (file_row_number), file_row_number + {offset + 1} AS {ident(RECORD)} "
                         f"FROM read_parquet({literal(str(f))}, file_row_number = true)")
            offset += int(count[0]) if count else 0
        self.con.execute(f"CREATE VIEW {ident(table)} AS " + " UNION ALL ".join(parts))

    def values(self, table: str, columns: Sequence[tuple[str, str]], rows: list[tuple[Any, ...]],
               scratch: Path) -> None:
        path = scratch / f"{table}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            out.writelines(csv_line(row) for row in rows)
        self.con.execute(f"CREATE TABLE {ident(table)} (" + ", ".join(f"{ident(n)} {t}" for n, t in columns) + ")")
        self.load_csv(table, path)

    def load_csv(self, table: str, path: Path) -> None:
        if path.stat().st_size == 0:
            return  # nothing to load (DuckDB cannot read an empty CSV file)
        self.con.execute(f"COPY {ident(table)} FROM {literal(str(path))} "
                         "(FORMAT csv, AUTO_DETECT false, HEADER false, NULLSTR '\\N', ALLOW_QUOTED_NULLS false, "
                         "QUOTE '\"', ESCAPE '\"', DELIMITER ',')")

    def close(self) -> None:
        self.con.close()


class Spark(Engine):
    dialect = "spark"

    def __init__(self, master: str, directory: Path, partitions: int) -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise CohortError("--engine spark needs pyspark: pip install 'crit[spark]'") from None
        builder: Any = SparkSession.builder
        self.session = (builder.master(master).appName("crit screen")
                        .config("spark.ui.enabled", "false")
                        # the results come back to this process a partition at a time, each
                        # one whole in the driver's heap beside the checkpoints (JY231, 10^6
                        # records in 2 partitions: out of heap), so many small ones
                        .config("spark.sql.shuffle.partitions", str(max(partitions, READ_PARTITIONS)))
                        .config("spark.sql.adaptive.advisoryPartitionSizeInBytes", "8m")
                        .config("spark.ui.showConsoleProgress", "false")
                        .config("spark.local.dir", str(directory))
                        .config("spark.sql.session.timeZone", "UTC")
                        # planning a protocol's query needs more than Spark's default 1 GiB of driver
                        # memory (JY231: analysis alone ran out of it); local mode runs in the driver
                        .config("spark.driver.memory", DRIVER_MEMORY)
                        # exact decimals: a product beyond 38 digits of type is capped, never rounded
                        # (the SQL backend sizes every value to fit 38 digits)
                        .config("spark.sql.decimalOperations.allowPrecisionLoss", "false")
                        .getOrCreate())
        self.session.sparkContext.setLogLevel("ERROR")

    def sql(self, duckdb_sql: str) -> str:
        return ";\n".join(transpile(duckdb_sql, read="duckdb", write="spark"))

    def execute(self, statement: str) -> None:
        self.session.sql(self.sql(statement))

    def rows(self, query: str, stream: bool = False) -> Iterator[tuple[Any, ...]]:
        frame = self.session.sql(self.sql(query))
        if not stream:  # a check's findings: few rows, in one job
            yield from (tuple(row) for row in frame.collect())
            return
        for row in frame.toLocalIterator(prefetchPartitions=True):  # the results: a partition at a time
            yield tuple(row)

    def types(self, table: str) -> dict[str, str]:
        return {name: _normal_type(kind) for name, kind in self.session.table(table).dtypes}

    def parquet(self, table: str, location: Path, numbered: bool) -> None:
        frame = self.session.read.parquet(str(location))
        if numbered:
            from pyspark.sql import Window
            from pyspark.sql import functions as f

            order = Window.orderBy(f.col("_metadata.file_path"), f.col("_metadata.row_index"))
            frame = frame.withColumn(RECORD, f.row_number().over(order)).cache()  # numbered once, read often
        frame.createOrReplaceTempView(table)

    def values(self, table: str, columns: Sequence[tuple[str, str]], rows: list[tuple[Any, ...]],
               scratch: Path) -> None:
        schema = ", ".join(f"`{n}` {'STRING' if t == 'VARCHAR' else t}" for n, t in columns)
        self.session.createDataFrame(rows, schema=schema).createOrReplaceTempView(table)

    def execute_view(self, name: str, query: str) -> None:
        self.session.sql(self.sql(query)).createOrReplaceTempView(name)

    def staged_view(self, name: str, query: str) -> None:
        """`query` (Spark SQL) as the view `name`, run in the stages of `stages`: each CTE a view
        planned over those before it, some checkpointed (rows computed and kept, plan cut) and
        released when nothing still to be planned reads them."""
        kept: dict[str, Any] = {}
        for stage in stages(name, query):
            frame = self.session.sql(stage.query)
            if stage.checkpoint:
                frame = kept[stage.name] = frame.localCheckpoint(eager=True)
            frame.createOrReplaceTempView(stage.name)
            for table in stage.drop:
                self.session.catalog.dropTempView(table)
            for table in stage.release:
                _release(kept.pop(table))

    def close(self) -> None:
        self.session.stop()


class Stage(NamedTuple):
    """One view of a staged query: `query` (Spark SQL) as the view `name`, checkpointed or not;
    then the views `drop` no later stage reads are dropped and the checkpoints `release` whose
    rows no later stage needs are freed."""

    name: str
    query: str
    checkpoint: bool
    drop: tuple[str, ...]
    release: tuple[str, ...]


def stages(name: str, query: str) -> list[Stage]:
    """The Spark SQL `query` as views planned one at a time, its CTEs first, then the query
    itself as `name`. Spark inlines CTEs and substitutes aliases through a chain of
    projections, so a protocol's levels `_l1` … `_lN` (each reading the one before several
    times) make expression trees that grow exponentially with depth: its planner never ended on
    JY231. A CTE is checkpointed when several places read it or when it ends a run of
    CHECKPOINT_EVERY unkept levels, so no plan spans more. CTE names all begin with `_`, which
    no layout table's does."""
    tree = parse_one(query, read="spark")
    ctes = list(tree.args["with_"].expressions) if tree.args.get("with_") else []
    tree.set("with_", None)
    names = {cte.alias for cte in ctes}
    bodies = [(cte.alias, cte.this) for cte in ctes] + [(name, tree)]
    reads = [[t.name for t in body.find_all(exp.Table) if t.name in names] for _, body in bodies]
    references = collections.Counter(table for read in reads for table in read)
    last_reader = {table: index for index, read in enumerate(reads) for table in read}
    kept: set[str] = set()
    needs: dict[str, set[str]] = {}  # the checkpoints whose rows each view reads
    depth: dict[str, int] = {}  # the levels of each view's plan since a checkpoint
    out: list[Stage] = []
    for index, (alias, body) in enumerate(bodies):
        needs[alias] = set().union(*({t} if t in kept else needs[t] for t in reads[index]))
        depth[alias] = 1 + max((depth[t] for t in reads[index]), default=0)
        checkpoint = index < len(ctes) and (references[alias] > 1 or depth[alias] >= CHECKPOINT_EVERY)
        if checkpoint:
            kept.add(alias)
            needs[alias], depth[alias] = {alias}, 0
        drop: tuple[str, ...] = ()
        release: tuple[str, ...] = ()
        if index < len(ctes):  # the result view reads its checkpoints until the session stops
            drop = tuple(sorted({t for t in reads[index] if last_reader[t] == index}))
            live = set().union(*(needs[t] for t in needs if last_reader.get(t, -1) > index))
            release = tuple(sorted(kept - live))
            kept -= set(release)
        out.append(Stage(alias, body.sql("spark"), checkpoint, drop, release))
    return out


def _release(frame: Any) -> None:
    """Free a checkpointed DataFrame's kept rows now, rather than when the JVM's garbage
    collector finds them unreachable (a local checkpoint is a persisted RDD under the plan)."""
    plan = frame._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        plan.rdd().unpersist(False)


def _normal_type(kind: str) -> str:
    kind = kind.lower().replace(" ", "")
    names = {"int": "integer", "int4": "integer", "int8": "bigint", "long": "bigint", "short": "smallint",
             "byte": "tinyint", "string": "varchar", "text": "varchar", "bool": "boolean", "int2": "smallint",
             "int1": "tinyint", "integer": "integer"}
    return names.get(kind, kind)


def _create_view(engine: Engine, name: str, query: str) -> None:
    if isinstance(engine, Spark):
        engine.execute_view(name, query)
    else:
        engine.execute(f"CREATE VIEW {ident(name)} AS {query}")


# ---- pass 1: JSON Lines, JSON and CSV --------------------------------------------------------


def load_records(engine: DuckDB, layout: tables.Layout, screener: Screener, module: Any, items: Iterator[Item],
                 scratch: Path) -> None:
    """Read and check every record; write the readable ones' rows, and every record's number,
    id and error, to CSV files; load them into the engine's tables."""
    files = {t.name: (scratch / f"{t.name}.csv").open("w", encoding="utf-8", newline="") for t in layout.tables}
    listing = (scratch / f"{RECORDS}.csv").open("w", encoding="utf-8", newline="")
    seen: dict[str, int] = {}
    validate = module.validate
    try:
        for number, line, payload, problem in items:
            record_id: Any = None
            if screener.columns is not None and isinstance(payload, list):
                record_id = screener.columns.id_of(payload)
            placed: dict[str, list[tables.Row]] | None = None
            if problem is None:
                try:
                    record = screener.parse(payload, line)
                except RowError as err:
                    problem = str(err)
                else:
                    if isinstance(record, dict):
                        record_id = record.get("id")
                    found = validate(record)
                    if found:
                        problem = "; ".join(str(p) for p in found)
                    elif record_id is not None and seen.setdefault(id_key(record_id), number) != number:
                        problem = duplicate_id(record_id, seen[id_key(record_id)])
                    else:
                        try:
                            placed = tables.rows(layout, str(number), record)
                        except tables.TableError as err:
                            problem = str(err)
            shown = result_id(record_id)
            listing.write(csv_line((number, str(number) if placed is not None else None,
                                    None if shown is None else text.json_text(shown), problem)))
            if placed is not None:
                for name, rows in placed.items():
                    files[name].writelines(csv_line(row) for row in rows)
    finally:
        for handle in (*files.values(), listing):
            handle.close()
    engine.execute(f"CREATE TABLE {ident(RECORDS)} (record BIGINT, patient_id VARCHAR, shown VARCHAR, "
                   "error VARCHAR)")
    engine.load_csv(RECORDS, scratch / f"{RECORDS}.csv")
    for statement in _creates(layout):
        engine.execute(statement)
    for table in layout.tables:
        engine.load_csv(table.name, scratch / f"{table.name}.csv")


def _creates(layout: tables.Layout) -> list[str]:
    return [tables.create_table(t, "duckdb").sql(dialect="duckdb") for t in layout.tables]


# ---- pass 1: Parquet, checked in SQL ---------------------------------------------------------


def _chains(layout: tables.Layout) -> dict[str, tuple[str, ...]]:
    """For each table, the list fields that lead to it from the patient: () for patients,
    ("treatments",) for patients__treatments."""
    chains: dict[str, tuple[str, ...]] = {tables.PATIENTS: ()}
    for table in layout.tables:
        for placed in table.fields:
            if placed.items is not None:
                chains[placed.items] = (*chains[table.name], placed.field.name)
    return chains


def _path(chain: tuple[str, ...], ordinals: Sequence[Any], name: str) -> str:
    steps = "".join(f"{field}[{index}]." for field, index in zip(chain, ordinals, strict=True))
    return f"{steps}{name}"


def _roles(placed: tables.FieldLayout) -> dict[str, tables.Column]:
    """A field's columns by role (`member:M` for a set's member M)."""
    return {c.role if c.member is None else f"member:{c.member}": c for c in placed.columns}


_VALUES = ("value", "uln", "start", "end", "ongoing", "measured")  # columns NULL when recorded as none


def _bad_date(column: str) -> str:
    """A DATE the record format cannot write (YYYY-MM-DD): infinite, before year 1 or after 9999."""
    return f"({column} IS NOT NULL AND NOT COALESCE(year({column}) BETWEEN 1 AND 9999, false))"


def _bounds(placed: tables.FieldLayout) -> tuple[Decimal, Decimal]:
    """The plausible range in the stored unit, at the column's scale, rounded inwards: a stored
    value outside it is outside the range (the SQL test is a superset; `_problems` decides)."""
    assert placed.field.plausible is not None
    scale = Decimal(1).scaleb(-placed.columns[0].scale)
    low, high = (Fraction(b) * placed.to_storage for b in (placed.field.plausible.low, placed.field.plausible.high))
    with localcontext() as context:
        context.prec = 60
        return ((Decimal(low.numerator) / Decimal(low.denominator)).quantize(scale, ROUND_CEILING),
                (Decimal(high.numerator) / Decimal(high.denominator)).quantize(scale, ROUND_FLOOR))


def _suspect(placed: tables.FieldLayout) -> list[str]:
    """SQL predicates, true for a row whose value of this field the record format rules out.
    Each is matched by `_problems`, which words it (a superset: `_problems` decides)."""
    t = placed.field.type
    cols = {k: ident(c.name) for k, c in _roles(placed).items()}
    out: list[str] = []
    value = cols.get("value")
    match t.kind:
        case "integer" | "decimal" | "quantity":
            out.append(f"abs({value}) >= {_LIMIT}")
        case "titer":
            out.append(f"({value} < 1 OR {value} > {_TITER_MAX})")
        case "lab":
            uln = cols["uln"]
            out.append(f"abs({value}) >= {_LIMIT} OR abs({uln}) >= {_LIMIT} OR {uln} <= 0 "
                       f"OR ({value} IS NULL) <> ({uln} IS NULL)")
        case "enum":
            out.append(f"{value} NOT IN ({', '.join(literal(m) for m in t.enum.member_names())})")
        case "set":
            members = [c for k, c in cols.items() if k.startswith("member:")]
            out.append("(" + " OR ".join(f"{c} IS NULL" for c in members) + ") AND ("
                       + " OR ".join(f"{c} IS NOT NULL" for c in members) + ")")
        case "list":
            out.append(f"{cols['items']} < 0")
        case "date":
            out.append(_bad_date(cols["value"]))
        case "interval":
            start, end, ongoing = cols["start"], cols["end"], cols["ongoing"]
            out.append(f"{start} IS NULL AND ({end} IS NOT NULL OR {ongoing} IS NOT NULL)")
            out.append(f"{ongoing} AND {end} IS NOT NULL")
            out.append(f"{end} < {start}")
            out += [_bad_date(start), _bad_date(end)]
        case "bool" | "judgment" | "text":
            pass
        case _:
            assert_never(t)
    if placed.field.plausible is not None and value is not None:
        low, high = _bounds(placed)
        out.append(f"({value} < {format(low, 'f')} OR {value} > {format(high, 'f')})")
    if placed.field.measured is not None:  # the date beside the result: both or neither
        measured = cols["measured"]
        out.append(f"({ident(placed.columns[0].name)} IS NULL) <> ({measured} IS NULL)")
        out.append(_bad_date(measured))
    if placed.field.optional:
        none = cols["none"]
        match t:
            case ir.SetOf():
                out.append(f"{none} AND (" + " OR ".join(f"{c}" for k, c in cols.items() if k.startswith("member:"))
                           + ")")
            case ir.ListOf():
                out.append(f"{none} AND {cols['items']} <> 0")
            case ir.Scalar() | ir.Measure() | ir.EnumOf():
                values = [c for k, c in cols.items() if k in _VALUES]
                out.append(f"{none} AND (" + " OR ".join(f"{c} IS NOT NULL" for c in values) + ")")
            case _:
                assert_never(t)
    return [f"COALESCE({p}, false)" for p in out]


def _read_day(value: Any, path: str, problems: list[rt.Problem]) -> datetime.date | None:
    """A DATE column's value, read as the text `_check_values` selects it as (YYYY-MM-DD)."""
    return None if value is None else rt.read_date(str(value), path, problems)


def _canonical(stored: Any, placed: tables.FieldLayout) -> rt.Exact:
    """A stored number in the field's canonical unit, as validate() holds it."""
    if placed.to_storage == 1:
        return Decimal(stored)
    number = Fraction(Decimal(stored)) / placed.to_storage
    if not tables.terminating(number):
        return number
    with localcontext() as context:
        context.prec = 60
        return Decimal(number.numerator) / Decimal(number.denominator)


def _problems(placed: tables.FieldLayout, row: Mapping[str, Any], path: str) -> list[str]:
    """The problems of one field's columns in a row `_suspect` found, worded as the runtime's
    readers word them where the record format has the same problem. DATE columns come as text
    (`_check_values`)."""
    t = placed.field.type
    values = {k: row[c.name] for k, c in _roles(placed).items()}
    value = values.get("value")
    problems: list[rt.Problem] = []
    dated = placed.field.measured is not None
    whole = not dated or t.kind in ("quantity", "lab")  # a dated result's value is at `.value` but these
    at = path if whole else f"{path}.value"
    if placed.field.optional and values.get("none"):
        recorded = [k for k, v in values.items() if k in _VALUES and v is not None]
        recorded += [k for k, v in values.items() if k.startswith("member:") and v]
        if recorded or (t.kind == "list" and values.get("items") not in (None, 0)):
            problems.append(rt.Problem(path, "recorded as none and with a value"))
        return [str(p) for p in problems]  # recorded as none: no value to read
    measured: datetime.date | None = None
    if dated:
        first = row[placed.columns[0].name]
        if first is not None and values["measured"] is None:
            problems.append(rt.Problem(f"{path}.measured", "missing: the date the result was measured"))
        elif first is None and values["measured"] is not None:
            problems.append(rt.Problem(f"{path}.value", "missing"))
        else:
            measured = _read_day(values["measured"], f"{path}.measured", problems)
    before = len(problems)
    number: Any = None
    match t.kind:
        case "integer":
            if value is not None:
                number = rt.read_integer(int(value), at, problems)
        case "decimal" | "quantity":
            if value is not None:
                number = rt.read_decimal(Decimal(value), at, problems)
        case "titer":
            if value is not None:
                rt.read_titer(f"1:{value}", at, problems)
        case "lab":
            uln = values["uln"]
            if (value is None) != (uln is None):
                lacking = "uln" if uln is None else "value"
                problems.append(rt.Problem(f"{at}.{lacking}", "missing; a lab value is recorded with its upper "
                                                             "limit of normal, or neither is"))
            elif value is not None:
                raw = {"value": Decimal(value), "uln": Decimal(uln), "unit": placed.storage}
                factors = {u.text: f for u, f in t.also}
                number = rt.read_lab(raw, at, problems, t.unit.text, factors)
        case "enum":
            if value is not None:
                rt.read_enum(value, at, problems, t.enum.member_names())
        case "set":
            members = {k.removeprefix("member:"): v for k, v in values.items() if k.startswith("member:")}
            empty = sorted(m for m, v in members.items() if v is None)
            if empty and len(empty) < len(members):
                problems.append(rt.Problem(at, f"the member columns {', '.join(empty)} are NULL and others are "
                                               "not; NULL in every one means missing"))
        case "list":
            if values["items"] is not None and values["items"] < 0:
                problems.append(rt.Problem(at, f"{values['items']} items"))
        case "date":
            _read_day(value, at, problems)
        case "interval":
            period = {k: values[k] for k in ("start", "end", "ongoing") if values[k] is not None}
            if period:
                rt.read_interval(period, at, problems)
        case "bool" | "judgment" | "text":
            pass
        case _:
            assert_never(t)
    plausible = placed.field.plausible
    if plausible is not None and number is not None and len(problems) == before:
        canonical = _canonical(number.value if isinstance(number, rt.Lab) else number, placed)
        read: Any = rt.Lab(canonical, _canonical(number.uln, placed)) if isinstance(number, rt.Lab) else canonical
        if dated:
            if measured is None:
                return [str(p) for p in problems]  # validate() reads no result then: no range to check
            read = rt.Dated(read, measured)
        unit = t.unit.text if isinstance(t, ir.Measure) else ""
        rt.plausible(read, plausible.low, plausible.high, plausible.text, unit, path, problems)
    return [str(p) for p in problems]


def check_parquet(engine: Engine, layout: tables.Layout, location: Path, scratch: Path, notes: list[str]) -> None:
    """Register the Parquet tables, check them, and define the views the protocol's SQL reads
    (the readable records only) and RECORDS (every record, with its error). What the user should
    know but that stops nothing is added to `notes`."""
    files: dict[str, Path] = {}
    for table in layout.tables:
        found = [location / f"{table.name}.parquet", location / table.name]
        where = next((p for p in found if p.exists()), None)
        if where is None:
            raise CohortError(f"{location}: no {table.name}.parquet (the Parquet layout has a file or "
                              f"directory per table: crit schema PROTOCOL --sql duckdb)")
        files[table.name] = where
    for table in layout.tables:
        raw = RAW + table.name
        try:
            engine.parquet(raw, files[table.name], numbered=table.depth == 0)
            have = engine.types(raw)
        except CohortError:
            raise
        except Exception as err:  # the engine's own error: a file that is not Parquet, say
            raise CohortError(f"{files[table.name]}: cannot be read as Parquet: {_first_line(err)}") from None
        have.pop(RECORD, None)
        _check_columns(table, have, files[table.name])
    by_record: dict[int, list[str]] = collections.defaultdict(list)
    by_id: dict[str, list[str]] = collections.defaultdict(list)
    chains = _chains(layout)
    for table in layout.tables:
        _check_values(engine, table, chains[table.name], by_record, by_id)
        if table.depth > 0:
            _check_items(engine, layout, table, chains[table.name], by_id, notes)
    _check_ids(engine, by_record)
    if by_id:
        engine.values("__crit_bad_ids", [("patient_id", "VARCHAR")], [(i,) for i in by_id], scratch)
        query = (f"SELECT {ident(RECORD)}, patient_id FROM {ident(RAW + tables.PATIENTS)} "
                 f"WHERE patient_id IN (SELECT patient_id FROM __crit_bad_ids)")
        for record, patient in engine.rows(query):
            by_record[int(record)].extend(by_id[patient])
    errors = [(record, "; ".join(messages)) for record, messages in sorted(by_record.items())]
    engine.values(ERRORS, [("record", "BIGINT"), ("error", "VARCHAR")], errors, scratch)
    raw_patients = ident(RAW + tables.PATIENTS)
    _create_view(engine, RECORDS,
                 f"SELECT r.{ident(RECORD)} AS record, r.patient_id AS patient_id, r.patient_id AS shown, "
                 f"e.error AS error FROM {raw_patients} r LEFT JOIN {ident(ERRORS)} e ON e.record = r.{ident(RECORD)}")
    for table in layout.tables:
        cast = ", ".join(_cast(c) for c in table.columns)
        if table.depth == 0:
            readable = f"{ident(RECORD)} NOT IN (SELECT record FROM {ident(ERRORS)})"
        else:
            readable = f"patient_id IN (SELECT patient_id FROM {ident(tables.PATIENTS)})"
        _create_view(engine, table.name, f"SELECT {cast} FROM {ident(RAW + table.name)} WHERE {readable}")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _cast(column: tables.Column) -> str:
    name = ident(column.name)
    if column.role == "none":
        return f"COALESCE({name}, false) AS {name}"
    if column.role == "ongoing":  # not recorded reads as false, as the runtime reads an interval
        start = ident(column.name.removesuffix("ongoing") + "start")
        return f"CASE WHEN {start} IS NOT NULL THEN COALESCE({name}, false) END AS {name}"
    sql_type = tables.sql_type(column, "duckdb").sql("duckdb")
    return f"CAST({name} AS {sql_type}) AS {name}"


def _check_columns(table: tables.Table, have: Mapping[str, str], where: Path) -> None:
    wanted = {c.name: c for c in table.columns}
    for name in have:
        if name not in wanted:
            raise CohortError(f"{where}: the column {name!r} is not in the layout of {table.name} "
                              "(crit schema PROTOCOL --sql duckdb)")
    for column in table.columns:
        if column.name not in have:
            raise CohortError(f"{where}: no column {column.name!r} (for {column.path or 'the key'}); "
                              "the layout is crit schema PROTOCOL --sql duckdb")
        kind = have[column.name]
        base = kind.split("(")[0]
        if base not in _ACCEPTS[column.kind]:
            raise CohortError(f"{where}: the column {column.name!r} is {kind.upper()}; the layout has "
                              f"{tables.sql_type(column, 'duckdb').sql('duckdb')}")
        if base == "decimal":
            scale = re.fullmatch(r"decimal\((\d+),(\d+)\)", kind)
            if scale is not None and int(scale.group(2)) > column.scale:
                raise CohortError(f"{where}: the column {column.name!r} is {kind.upper()}, with more decimal "
                                  f"places than the layout's {column.scale}")


def _check_values(engine: Engine, table: tables.Table, chain: tuple[str, ...], by_record: dict[int, list[str]],
                  by_id: dict[str, list[str]]) -> None:
    tests = [(placed, _suspect(placed)) for placed in table.fields]
    predicates = [p for _, ps in tests for p in ps]
    if not predicates:
        return
    keys = [ident(k) for k in table.key]
    record = [ident(RECORD)] if table.depth == 0 else []
    shown = [c for c in table.columns if c.role not in ("key", "ordinal")]
    names = [c.name for c in shown]
    selected = [f"CAST({ident(c.name)} AS VARCHAR)" if c.kind == "date" else ident(c.name) for c in shown]
    query = (f"SELECT {', '.join([*record, *keys, *selected])} FROM {ident(RAW + table.name)} "
             f"WHERE {' OR '.join(predicates)}")
    for found in engine.rows(query):
        values = list(found)
        number = values.pop(0) if table.depth == 0 else None
        key = values[:len(keys)]
        row = dict(zip(names, values[len(keys):], strict=True))
        messages: list[str] = []
        for placed, _ in tests:
            messages += _problems(placed, row, _path(chain, key[1:], placed.field.name))
        if not messages:
            continue
        if number is not None:
            by_record[int(number)].extend(messages)
        elif key[0] is not None:
            by_id[str(key[0])].extend(messages)


def _check_items(engine: Engine, layout: tables.Layout, table: tables.Table, chain: tuple[str, ...],
                 by_id: dict[str, list[str]], notes: list[str]) -> None:
    """A list's item rows must match the count its parent row gives, with ordinals 0 … n-1. Rows
    that belong to no parent row (items of patients not in the extract) are not read: a note says
    how many."""
    parent = next(t for t in layout.tables if any(p.items == table.name for p in t.fields))
    placed = next(p for p in parent.fields if p.items == table.name)
    items = ident(placed.column("items").name)
    parent_key = [ident(k) for k in parent.key]
    ordinal = ident(table.key[-1])
    on = " AND ".join(f"p.{k} = c.{k}" for k in parent_key)
    query = (f"SELECT {', '.join(f'coalesce(p.{k}, c.{k})' for k in parent_key)}, p.{items}, c.n, c.lo, c.hi, c.d, "
             f"p.{parent_key[0]} IS NULL FROM {ident(RAW + parent.name)} p FULL OUTER JOIN "
             f"(SELECT {', '.join(parent_key)}, count(*) AS n, min({ordinal}) AS lo, max({ordinal}) AS hi, "
             f"count(DISTINCT {ordinal}) AS d FROM {ident(RAW + table.name)} GROUP BY {', '.join(parent_key)}) c "
             f"ON {on} WHERE (c.n IS NOT NULL AND (p.{items} IS NULL OR p.{items} <> c.n OR c.lo <> 0 "
             f"OR c.hi <> c.n - 1 OR c.d <> c.n)) OR (c.n IS NULL AND p.{items} > 0)")
    orphans = 0
    for found in engine.rows(query):
        *key, count, n, low, high, _, orphan = found
        if orphan:
            orphans += int(n)
            continue
        path = _path(chain[:-1], key[1:], chain[-1])
        if n is None:
            message = f"{path}: {placed.column('items').name} is {count} but {table.name} holds no item of it"
        elif count is None or count != n:
            message = f"{path}: {placed.column('items').name} is {count} but {table.name} holds {n} items of it"
        else:
            message = f"{path}: its items in {table.name} are numbered {low} to {high}, not 0 to {n - 1} once each"
        if key[0] is not None:
            by_id[str(key[0])].append(message)
    if orphans:
        notes.append(f"{table.name}: {orphans:,} row{'s' if orphans != 1 else ''} belong to no row of {parent.name} "
                     f"(no such patient_id{', ordinal' if parent.depth else ''}); not read")


def _check_ids(engine: Engine, by_record: dict[int, list[str]]) -> None:
    """Every patient needs an id, and its own: list items are tied to their patient by it, so
    every record sharing an id is an error row (the items could be either's)."""
    raw = ident(RAW + tables.PATIENTS)
    rec = ident(RECORD)
    query = (f"SELECT {rec}, patient_id, first, n FROM (SELECT {rec}, patient_id, "
             f"min({rec}) OVER (PARTITION BY patient_id) AS first, "
             f"count(*) OVER (PARTITION BY patient_id) AS n FROM {raw}) t WHERE n > 1 OR patient_id IS NULL")
    for number, patient, first, n in engine.rows(query):
        if patient is None:
            by_record[int(number)].append("id: missing (patient_id is NULL); the layout ties list items to it")
        elif int(number) == int(first):
            by_record[int(number)].append(f"id: {text.json_source(patient)} is also the id of {int(n) - 1} later "
                                          "record" + ("s" if int(n) > 2 else ""))
        else:
            by_record[int(number)].append(duplicate_id(patient, int(first)))


# ---- pass 2 ---------------------------------------------------------------------------------


RESULTS = "__crit_results"
_EMITTED: dict[tuple[ir.Protocol, str], str] = {}  # the SQL of protocols screened in this process


def _emitted(protocol: ir.Protocol, dialect: str) -> str:
    """The protocol's SQL, compiled once per process (screening a cohort twice, as a test or an
    embedding application does, compiles it once)."""
    key = (protocol, dialect)
    if key not in _EMITTED:
        if len(_EMITTED) >= 8:
            _EMITTED.clear()
        _EMITTED[key] = emit_sql(protocol, dialect)
    return _EMITTED[key]


def register_results(engine: Engine, protocol: ir.Protocol) -> None:
    """The protocol's SQL, as the engine's own dialect writes it, as the view RESULTS: per
    patient_id, `decision`, one column per criterion (named by its id), `missing` and
    `pending_judgments` (paths joined by ', ')."""
    query = _emitted(protocol, engine.dialect).strip().removesuffix(";")
    if isinstance(engine, Spark):
        engine.staged_view(RESULTS, query)
    else:
        engine.execute(f"CREATE VIEW {ident(RESULTS)} AS {query}")


def screen_rows(engine: Engine, protocol: ir.Protocol, job: Job, parquet: bool) -> Iterator[Screened]:
    """Pass 2: the protocol's SQL over the readable records, joined to every record in order,
    as batches of the Python engine's rows."""
    screener = Screener(job)
    module = import_evaluator(job.module_path, job.module_name)
    register_results(engine, protocol)
    outcome_columns = ", ".join(f"s.{ident(c.id)}" for c in module.CRITERIA)
    query = (f"SELECT r.record, r.shown, r.error, s.decision, s.missing, s.pending_judgments, {outcome_columns} "
             f"FROM {ident(RECORDS)} r LEFT JOIN {ident(RESULTS)} s "
             f"ON s.{ident(tables.PATIENT_ID)} = r.patient_id AND r.error IS NULL ORDER BY r.record")
    outcome_of = {o.value: o for o in module.Outcome}
    decision_of = {d.value: d for d in module.Decision}
    decided: dict[tuple[str, str], tuple[str, ...]] = {}
    tally: report.Tally | None = report.Tally(screener.criteria) if job.tally else None
    counts: collections.Counter[str] = collections.Counter()
    batch: list[tuple[Any, ...]] = []
    for number, shown_text, error, decision, missing, pending, *outcomes in engine.rows(query, stream=True):
        number = int(number)
        if shown_text is None:
            shown = None
        elif parquet:
            shown = str(shown_text)
        else:
            shown = json_records.loads(shown_text)
        if error is not None or decision is None:
            problem = error if error is not None else "the protocol's SQL gave no result for this record"
            counts[report.ERROR] += 1
            if tally is not None:
                tally.add_error(number, "" if shown is None else str(shown), problem)
            batch.append((number, shown, report.ERROR, (), (), (), problem))
        else:
            joined = "|".join(outcomes)
            missing_t, pending_t = _paths(missing), _paths(pending)
            by = decided.get((decision, joined))
            if by is None:
                assessed = module.Assessment(decision_of[decision], tuple(outcome_of[o] for o in outcomes),
                                             missing_t, pending_t)
                by = screener.decided_by(assessed)
                if len(decided) > 65_536:
                    decided.clear()
                decided[(decision, joined)] = by
            counts[decision] += 1
            if tally is not None:
                tally.add(decision, joined, missing_t + pending_t,
                          f"record {number}" if shown is None or shown == "" else str(shown))
            batch.append((number, shown, decision, by, missing_t, pending_t, None))
        if len(batch) >= BATCH:
            yield screener.text(batch), counts, tally, ()
            batch, counts = [], collections.Counter()
            tally = report.Tally(screener.criteria) if job.tally else None
    if batch or tally is not None:
        yield screener.text(batch), counts, tally, ()


def _paths(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p for p in value.split(", ") if p)
    return tuple(value)


# ---- the engine ------------------------------------------------------------------------------


def screen(name: str, protocol: ir.Protocol, job: Job, items: Iterator[Item], parquet: Path | None, jobs: int,
           master: str | None, scratch: Path) -> Generator[Screened, None, None]:
    """Screen with `name` ("duckdb" or "spark"): the records of `items` (JSON Lines, JSON, CSV)
    or the Parquet cohort at `parquet`. The engine is started, and the Parquet cohort checked,
    before this returns (a CohortError is raised then, before any row is written); the rows come
    as the generator is read, in record order."""
    layout = tables.layout(protocol)
    engine: Engine
    if name == "spark":
        engine = Spark(master or f"local[{max(jobs, 1)}]", scratch, max(jobs, 1) * 2)
    else:
        engine = DuckDB(scratch, max(jobs, 1))
    try:
        if parquet is not None:
            notes: list[str] = []
            check_parquet(engine, layout, parquet, scratch, notes)
            for note in notes:
                click.echo(f"crit: note: {note}", err=True)
        else:
            assert isinstance(engine, DuckDB)
            module = import_evaluator(job.module_path, job.module_name)
            load_records(engine, layout, Screener(job), module, items, scratch)
    except BaseException:
        engine.close()
        raise
    return _rows_then_close(engine, protocol, job, parquet is not None)


def _rows_then_close(engine: Engine, protocol: ir.Protocol, job: Job, parquet: bool
                     ) -> Generator[Screened, None, None]:
    try:
        yield from screen_rows(engine, protocol, job, parquet)
    finally:
        engine.close()


# ---- writing a Parquet cohort ----------------------------------------------------------------


def write_parquet(layout: tables.Layout, records: Iterable[tuple[str, Mapping[str, object]]], directory: Path,
                  scratch: Path) -> int:
    """Write readable records, as (patient id, record) pairs, as a Parquet cohort in the layout:
    `directory/<table>.parquet` for each table, typed columns (DuckDB writes them). Each record
    must be one the generated module's `validate()` accepts (`tables.rows` raises TableError
    otherwise). Returns the number of records."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {t.name: (scratch / f"{t.name}.csv").open("w", encoding="utf-8", newline="") for t in layout.tables}
    count = 0
    try:
        for patient_id, record in records:
            for name, rows in tables.rows(layout, patient_id, record).items():
                files[name].writelines(csv_line(row) for row in rows)
            count += 1
    finally:
        for handle in files.values():
            handle.close()
    engine = DuckDB(scratch, 2)
    try:
        for statement in _creates(layout):
            engine.execute(statement)
        for table in layout.tables:
            engine.load_csv(table.name, scratch / f"{table.name}.csv")
            target = directory / f"{table.name}.parquet"
            engine.execute(f"COPY {ident(table.name)} TO {literal(str(target))} (FORMAT parquet)")
    finally:
        engine.close()
    return count
