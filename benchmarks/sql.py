"""Screening at scale: JY231 through its SQL on DuckDB (and Spark) against the Python engine.

    python benchmarks/sql.py --sizes 1000000 10000000 --sample 20000 [--screen-up-to 1000000]
                             [--spark 1000000] [--dir /tmp/crit-sql] [--against OLD.sql ...]
                             [--python-records 1000000]

1. Data. `--sample` synthetic JY231 records from benchmarks/cohort.py (its mix of eligible,
   ineligible, incomplete and, at 0.2 %, unreadable records) are written as JSON Lines, and the
   readable ones as a Parquet cohort in the layout (`crit.screening.sql_engine.write_parquet`:
   typed columns). Each size is that cohort repeated with fresh patient ids (DuckDB copies the
   rows, so generating 10^7 records in Python is not part of the run): the SQL does the same
   work per row whether rows repeat or not, as it caches nothing per patient.
2. Timed, each in a process of its own (wall time, and peak RSS from wait4):
   - `sql core`: the protocol's SQL over the Parquet tables, every criterion's outcome, the
     decision and the missing facts materialised to a Parquet file (DuckDB, all cores);
   - `crit screen --engine duckdb`: the whole command on the Parquet cohort (the SQL checks of
     pass 1, the SQL, and the result rows written as JSON Lines by Python), for the sizes up to
     `--screen-up-to` (writing 10^7 JSON rows in Python takes longer than the SQL);
   - `crit screen --engine python --jobs 2` on the JSON Lines sample, or with `--python-records N`
     on the sample repeated to N records with fresh ids (so that Python's start-up, compiling
     JY231 and starting its workers, weighs as little as in the large runs): its records/s is
     extrapolated to each size (per-record cost is flat: README, "Performance");
   - JSON Lines ingestion: `crit screen --engine duckdb --jobs 2` on the same JSON Lines sample
     (validation in Python, load, SQL), against the Python engine;
   - with `--spark N`: `crit screen --engine spark` on N records (local[2]);
   - with `--against FILE`: the SQL core with that query instead (an older JY231 query, e.g.
     `git show 26e9ab9:generated/jy231.sql > before.sql`), in the same run, on the sizes up to
     `--screen-up-to`.
The table printed is the README's ("Screening at scale").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cohort  # noqa: E402

from crit.backends.sql import emit_sql  # noqa: E402
from crit.pipeline import compile_or_fail, evaluator  # noqa: E402
from crit.screening import sql_engine  # noqa: E402
from crit.sources import tables  # noqa: E402

JY231 = ROOT / "protocols" / "jy231.crit"
CRIT = [sys.executable, "-c", "from crit.cli import main; main()"]


@dataclass
class Run:
    """One timed command: wall seconds, CPU seconds (its own and its children's), peak RSS."""

    seconds: float
    cpu: float
    rss: float


def timed(command: list[str]) -> Run:
    """Run a command to its end; exit 0 or 3 (some records unreadable) is success."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # wait4's usage is the child's alone; RUSAGE_CHILDREN adds the grandchildren it waited for
    # (the worker processes of --jobs 2)
    return Run(seconds, max(cpu, usage.ru_utime + usage.ru_stime), usage.ru_maxrss / 1024)


def make_data(directory: Path, sample: int, sizes: list[int]) -> tuple[Path, dict[int, Path]]:
    protocol, loaded = compile_or_fail(JY231)
    module = evaluator(protocol, loaded)
    layout = tables.layout(protocol)
    jsonl = directory / f"sample-{sample}.jsonl"
    readable = []
    with jsonl.open("w", encoding="utf-8") as out:
        for record in cohort.cohort(sample):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    from crit.sources import records as json_records

    for line in jsonl.read_text(encoding="utf-8").splitlines():
        record = json_records.loads(line)
        if not module.validate(record):
            readable.append((str(record["id"]), record))
    base = directory / f"base-{sample}"
    with tempfile.TemporaryDirectory() as scratch:
        sql_engine.write_parquet(layout, readable, base, Path(scratch))
    import duckdb

    cohorts = {}
    con = duckdb.connect()
    con.execute(f"CREATE TABLE numbers AS SELECT patient_id, file_row_number AS n "
                f"FROM read_parquet('{base / 'patients.parquet'}', file_row_number = true)")
    for size in sizes:
        target = directory / f"cohort-{size}"
        target.mkdir(exist_ok=True)
        copies = -(-size // len(readable))
        for table in layout.tables:
            order = ", ".join(["r.k", "u.n", *(f"t.ordinal_{d}" for d in range(1, table.depth + 1))])
            con.execute(f"COPY (SELECT t.* REPLACE (t.patient_id || '-' || r.k AS patient_id) "
                        f"FROM read_parquet('{base / (table.name + '.parquet')}') t "
                        f"JOIN numbers u ON u.patient_id = t.patient_id CROSS JOIN range({copies}) r(k) "
                        f"WHERE r.k * {len(readable)} + u.n < {size} ORDER BY {order}) "
                        f"TO '{target / (table.name + '.parquet')}' (FORMAT parquet)")
        cohorts[size] = target
    con.close()
    return jsonl, cohorts


def repeated(sample: Path, directory: Path, records: int) -> Path:
    """The sample's JSON Lines repeated with fresh patient ids up to `records` (kept in --dir)."""
    target = directory / f"python-{records}.jsonl"
    if target.exists():
        return target
    lines = sample.read_text(encoding="utf-8").splitlines()
    partial = target.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        for n in range(records):
            copy, line = divmod(n, len(lines))
            try:
                record = json.loads(lines[line])
            except json.JSONDecodeError:  # an unreadable record of the sample stays as it is
                out.write(lines[line] + "\n")
                continue
            if isinstance(record, dict) and copy:
                record["id"] = f"{record.get('id')}-{copy}"
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(target)
    return target


def core(location: Path, out: Path, query_file: Path | None = None) -> None:
    """The protocol's SQL over the Parquet tables, materialised (run in its own process)."""
    import duckdb

    protocol, _ = compile_or_fail(JY231)
    text = query_file.read_text(encoding="utf-8") if query_file else emit_sql(protocol, "duckdb")
    query = text.strip().removesuffix(";")
    con = duckdb.connect()
    for table in tables.layout(protocol).tables:
        location_sql = sql_engine.literal(str(location / (table.name + ".parquet")))
        con.execute(f"CREATE VIEW {sql_engine.ident(table.name)} AS SELECT * FROM read_parquet({location_sql})")
    con.execute(f"COPY ({query}) TO {sql_engine.literal(str(out))} (FORMAT parquet)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--sample", type=int, default=20_000, help="records generated (and screened by Python)")
    parser.add_argument("--spark", type=int, default=0, help="also screen this many records on Spark (local[2])")
    parser.add_argument("--screen-up-to", type=int, default=None,
                        help="run the whole `crit screen --engine duckdb` only on sizes up to this")
    parser.add_argument("--dir", type=Path, default=None, help="where the data goes (default: a temporary directory)")
    parser.add_argument("--python-records", type=int, default=0, metavar="N",
                        help="screen N records with the Python engine for its baseline (the sample repeated "
                             "with fresh ids), so that its start-up weighs as little as in the large runs")
    parser.add_argument("--against", type=Path, nargs="+", default=[], metavar="SQL",
                        help="also time these JY231 query files (an older generated/jy231.sql) as the SQL core")
    parser.add_argument("--core", nargs="+", type=Path, metavar="COHORT OUT [SQL]", help=argparse.SUPPRESS)
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.core:
        core(*args.core)
        return 0
    directory = args.dir or Path(tempfile.mkdtemp(prefix="crit-sql-"))
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sizes = sorted(set(args.sizes) | ({args.spark} if args.spark else set()))
    if args.make:
        make_data(directory, args.sample, sizes)
        return 0
    # The data is made in a process of its own, and kept in --dir for the next run: a child
    # starts with its parent's peak RSS (Linux), so this process must stay small.
    jsonl = directory / f"sample-{args.sample}.jsonl"
    cohorts = {size: directory / f"cohort-{size}" for size in sizes}
    if not jsonl.exists() or not all((c / "patients.parquet").exists() for c in cohorts.values()):
        subprocess.run([sys.executable, __file__, "--make", "--dir", str(directory), "--sample", str(args.sample),
                        "--sizes", *map(str, sizes)], check=True)
    print(f"data: {args.sample:,} generated records, cohorts of {', '.join(f'{s:,}' for s in sizes)} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    out = directory / "out"
    baseline, counted = jsonl, args.sample
    if args.python_records > args.sample:  # the sample repeated with fresh ids, as the Parquet cohorts are
        baseline, counted = repeated(jsonl, directory, args.python_records), args.python_records
    python = timed([*CRIT, "screen", str(JY231), str(baseline), "-o", f"{out}-python.jsonl", "-q", "--jobs", "2",
                    "--engine", "python"])
    if baseline != jsonl:
        subprocess.run([*CRIT, "screen", str(JY231), str(jsonl), "-o", f"{out}.jsonl", "-q", "--jobs", "2",
                        "--engine", "python"], stdout=subprocess.DEVNULL)
    else:
        Path(f"{out}-python.jsonl").replace(f"{out}.jsonl")
    ingest = timed([*CRIT, "screen", str(JY231), str(jsonl), "-o", f"{out}-duckdb.jsonl", "-q",
                    "--jobs", "2", "--engine", "duckdb"])
    same = Path(f"{out}.jsonl").read_bytes() == Path(f"{out}-duckdb.jsonl").read_bytes()
    print(f"the sample's result rows, python and duckdb engines: {'identical' if same else 'DIFFERENT'}", flush=True)
    per = python.seconds / counted * 1e6

    def ratio(run: Run, n: int) -> str:
        return f"{per / (run.seconds / n * 1e6):.1f}×"

    rows = [("crit screen --engine python --jobs 2 (JSON Lines)", counted, python, "1.0× (measured)")]
    # the query as a file, as --against's are: each SQL core run reads its query, none compiles it
    current = directory / "jy231.sql"
    current.write_text(emit_sql(compile_or_fail(JY231)[0], "duckdb"), encoding="utf-8")
    for size in args.sizes:
        run = timed([sys.executable, __file__, "--core", str(cohorts[size]), f"{out}.parquet", str(current)])
        rows.append(("SQL core on DuckDB (Parquet in, Parquet out)", size, run, ratio(run, size)))
        print(f"SQL core, {size:,} records: {run.seconds:.1f} s, {run.cpu:.1f} s CPU, {run.rss:,.0f} MiB", flush=True)
        for other in args.against if args.screen_up_to is None or size <= args.screen_up_to else []:
            run = timed([sys.executable, __file__, "--core", str(cohorts[size]), f"{out}.parquet", str(other)])
            rows.append((f"SQL core on DuckDB, the query {other.name}", size, run, ratio(run, size)))
            print(f"{other}, {size:,} records: {run.seconds:.1f} s, {run.cpu:.1f} s CPU, {run.rss:,.0f} MiB",
                  flush=True)
        if args.screen_up_to is not None and size > args.screen_up_to:
            continue
        run = timed([*CRIT, "screen", str(JY231), str(cohorts[size]), "-o", f"{out}.jsonl", "-q", "--jobs", "2",
                     "--engine", "duckdb"])
        rows.append(("crit screen --engine duckdb (Parquet in, JSON Lines out)", size, run, ratio(run, size)))
    rows.append(("crit screen --engine duckdb --jobs 2 (JSON Lines in)", args.sample, ingest,
                 f"{per / (ingest.seconds / args.sample * 1e6):.2f}×"))
    if args.spark:
        run = timed([*CRIT, "screen", str(JY231), str(cohorts[args.spark]), "-o", f"{out}.jsonl", "-q",
                     "--jobs", "2", "--engine", "spark"])
        rows.append(("crit screen --engine spark, local[2] (Parquet in)", args.spark, run, ratio(run, args.spark)))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load} on {os.cpu_count()} CPUs")
    print("\n| what | records | wall s | µs/record | records/s | CPU s | peak RSS MiB | vs Python |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for what, n, run, versus in rows:
        print(f"| {what} | {n:,} | {run.seconds:.1f} | {run.seconds / n * 1e6:.2f} | {n / run.seconds:,.0f} | "
              f"{run.cpu:.1f} | {run.rss:,.0f} | {versus} |")
    print(f"\nPython's records/s is measured on {counted:,} records (its start-up included) and holds per record "
          f"at any larger size; the machine has {os.cpu_count()} cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
