"""FHIR input speed: patients per second from a bulk-data NDJSON export to result rows, and peak
memory, against the JSON Lines path on the same patients, measured in the same run.

For each size, `benchmarks/fhir_cohort.py` writes the first SIZE patients of the synthetic JY231
cohort both ways (JSON Lines, and an `$export` directory with the manual-entry file); then each
`crit screen` runs as a process of its own, timed (wall and CPU seconds, peak RSS from wait4):

    crit screen protocols/jy231.crit cohort.jsonl -o rows.jsonl
    crit screen --from fhir protocols/jy231.crit export/ --manual manual.jsonl -o rows.jsonl

and the two row files are compared (decision, deciding criteria, missing facts, pending
judgments), leaving out the records FHIR cannot say (`fhir_cohort.FhirPatient.left_out`).

    python benchmarks/fhir.py                       # 1,000 and 10,000 patients
    python benchmarks/fhir.py --sizes 10000 100000 --base 10000   # 10^5: 10^4 patients repeated with fresh ids

The machine's load average is printed with the table: on a shared machine, read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cohort  # noqa: E402
import fhir_cohort  # noqa: E402

JY231 = ROOT / "protocols" / "jy231.crit"
COMPARED = ("decision", "decided_by", "missing", "pending_judgments")


def timed(command: list[str]) -> tuple[float, float, float, int]:
    """Run a command: wall seconds, CPU seconds, peak RSS in MiB, exit code."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 3):
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed ({code}):\n{errors.read().decode()[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def make_data(directory: Path, size: int, seed: int, invalid: float = 0.002,
              ) -> tuple[Path, Path, Path, list[str | None], float]:
    """The JSON Lines cohort and its FHIR export; the left-out reason of each record; seconds taken.
    A directory kept from an earlier run (`--keep`, same size and seed) is used as it is."""
    started = time.perf_counter()
    records = directory / "cohort.jsonl"
    export, manual = directory / "export", directory / "manual.jsonl"
    done = directory / f"left-out-{seed}-{invalid}.json"
    if done.exists():
        return records, export, manual, json.loads(done.read_text(encoding="utf-8")), 0.0
    cohort.write(records, size, seed, invalid)
    left_out: list[str | None] = []

    def noting() -> Any:
        for patient in fhir_cohort.fhir_cohort(size, seed, invalid):
            left_out.append(patient.left_out)
            yield patient

    fhir_cohort.write(noting(), export, "ndjson", manual, seed=seed)
    done.write_text(json.dumps(left_out), encoding="utf-8")
    return records, export, manual, left_out, time.perf_counter() - started


_ID = re.compile(r'("id": ?"[^"]+)"')
_PATIENT = re.compile(r'("reference": ?"Patient/([^"]+))"')


def repeat(base: Path, directory: Path, size: int, base_size: int, left_out: list[str | None],
           ) -> tuple[Path, Path, Path, list[str | None], float]:
    """`size` patients made of the `base_size` in `base` repeated with fresh ids (`P0000001-r2`)
    for patients and resources alike, both ways; each repeat's resources after the one before."""
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    copies = -(-size // base_size)

    def copy(source: Path, target: Path, patients_only: bool) -> None:
        with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
            written = 0
            for k in range(1, copies + 1):
                lines.seek(0)
                for line in lines:
                    if patients_only and written == size:
                        return
                    if k > 1:
                        line = _PATIENT.sub(rf'\1-r{k}"', _ID.sub(rf'\1-r{k}"', line, count=1))
                    out.write(line)
                    written += 1

    copy(base / "cohort.jsonl", directory / "cohort.jsonl", True)
    copy(base / "manual.jsonl", directory / "manual.jsonl", True)
    (directory / "export").mkdir(exist_ok=True)
    for part in sorted((base / "export").glob("*.ndjson")):
        copy(part, directory / "export" / part.name, part.name == "Patient.ndjson")
    if size % base_size:  # the last copy is cut short: keep only resources of its patients
        kept = {json.loads(line)["id"] for line in (directory / "export" / "Patient.ndjson").open(encoding="utf-8")}
        for part in (directory / "export").glob("*.ndjson"):
            text = [line for line in part.open(encoding="utf-8")
                    if (found := _PATIENT.search(line)) is None or found.group(2) in kept]
            part.write_text("".join(text), encoding="utf-8")
    return (directory / "cohort.jsonl", directory / "export", directory / "manual.jsonl",
            (left_out * copies)[:size], time.perf_counter() - started)


def agreement(json_rows: Path, fhir_rows: Path, left_out: list[str | None]) -> tuple[int, int, int]:
    """(agree, differ, left out) over the two row files, record by record."""
    agree = differ = skipped = 0
    with json_rows.open(encoding="utf-8") as mine, fhir_rows.open(encoding="utf-8") as theirs:
        for reason, a, b in zip(left_out, mine, theirs, strict=True):
            if reason is not None:
                skipped += 1
                continue
            x, y = json.loads(a), json.loads(b)
            same = all(x[k] == y[k] for k in COMPARED) if x["decision"] != "error" else y["decision"] == "error"
            agree, differ = agree + same, differ + (not same)
    return agree, differ, skipped


def size_of(path: Path) -> float:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files if p.is_file()) / (1 << 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="patients (default 1000 10000)")
    parser.add_argument("--seed", type=int, default=231)
    parser.add_argument("--keep", type=Path, help="write the data here and keep it, or use what an earlier run "
                                                  "kept there (default: a temporary directory)")
    parser.add_argument("--invalid", type=float, default=0.002,
                        help="the share of records made unreadable on purpose (default 0.002, as cohort.py)")
    parser.add_argument("--data-only", action="store_true", help="write the data (with --keep) and stop")
    parser.add_argument("--base", type=int, default=0,
                        help="make sizes above BASE of the first BASE patients repeated with fresh ids "
                             "(generating 10^5 patients takes about 10 CPU minutes)")
    args = parser.parse_args(argv)
    crit = [sys.executable, "-m", "crit.cli"]
    differing = 0
    print("| path | patients | input MiB | wall s | CPU s | patients/s (wall) | CPU ms/patient | peak RSS MiB | "
          "vs JSON (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for size in args.sizes:  # each size's rows as soon as they are measured
        with tempfile.TemporaryDirectory(prefix="crit-fhir-bench-") as scratch:
            directory = (args.keep / str(size)) if args.keep else Path(scratch)
            directory.mkdir(parents=True, exist_ok=True)
            if args.base and size > args.base:
                base = args.keep / str(args.base) if args.keep else Path(scratch) / "base"
                base.mkdir(parents=True, exist_ok=True)
                *_, base_left_out, _ = make_data(base, args.base, args.seed, args.invalid)
                records, export, manual, left_out, made = repeat(base, directory, size, args.base, base_left_out)
            else:
                records, export, manual, left_out, made = make_data(directory, size, args.seed, args.invalid)
            print(f"{size:,} patients written both ways in {made:.0f} s (0: kept from an earlier run) "
                  f"(JSON Lines {size_of(records):.0f} MiB, NDJSON export {size_of(export):.0f} MiB)", file=sys.stderr)
            if args.data_only:
                continue
            load = os.getloadavg()[0]
            json_rows, fhir_rows = directory / "json-rows.jsonl", directory / "fhir-rows.jsonl"
            plain = timed([*crit, "screen", "-q", str(JY231), str(records), "-o", str(json_rows)])
            fhir = timed([*crit, "screen", "-q", "--from", "fhir", str(JY231), str(export), "--manual", str(manual),
                          "-o", str(fhir_rows)])
            agree, differ, skipped = agreement(json_rows, fhir_rows, left_out)
            differing += differ
            for name, (wall, cpu, rss, _), mib in (("JSON Lines", plain, size_of(records)),
                                                    ("FHIR NDJSON + manual", fhir, size_of(export))):
                print(f"| {name} | {size:,} | {mib:.1f} | {wall:.1f} | {cpu:.1f} | {size / wall:,.0f} | "
                      f"{1000 * cpu / size:.2f} | {rss:.0f} | {plain[1] / cpu:.2f}x |")
            print(f"{size:,} patients: {agree:,} agree, {differ:,} differ, {skipped:,} left out (FHIR cannot say "
                  f"them); load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs",
                  flush=True)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
