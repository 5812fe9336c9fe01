"""Benchmarks for crit on JY231 (not part of the test suite). One command, one report:

    python benchmarks/run.py            # cohort of 100,000; crit screen on 1,000,000 records
    python benchmarks/run.py --quick    # cohort of 10,000; crit screen on 100,000 (a couple of minutes)

It generates a seeded synthetic JY231 cohort (benchmarks/cohort.py), checks that every baseline
agrees with the generated module on every record of it (decision and every criterion's
outcome; the same records rejected), and only then times them, in the same run:

- evaluate() against a hand-written JY231 evaluator (benchmarks/handwritten.py) that records
  every criterion's outcome, with the same three-valued semantics (target: at least 1.0x);
- decide() against a hand-written short-circuiting one (target: at least 0.9x);
- the generated module against the reference interpreter (crit.interpret, if importable) and
  a naive tree-walker over the IR (benchmarks/naive.py);
- compile time of JY231, in process with the parser warm (target 50 ms) and `crit build` as a
  whole process (target 0.5 s), and of synthetic protocols of 10 to 10,000 criteria;
- `crit screen` throughput and peak memory with --jobs 1 and --jobs 2.

Ratios are baseline time / generated time: above 1 means the generated code is faster.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cohort  # noqa: E402
import handwritten  # noqa: E402
import naive  # noqa: E402
import synthetic  # noqa: E402

from crit import runtime  # noqa: E402
from crit.backends.python import emit_python  # noqa: E402
from crit.check.checker import check  # noqa: E402
from crit.driver import MAX_SOURCE_BYTES, Loaded, load  # noqa: E402
from crit.pipeline import outputs  # noqa: E402
from crit.process import import_evaluator as import_module  # noqa: E402
from crit.syntax import parse  # noqa: E402

JY231 = ROOT / "protocols" / "jy231.crit"
# `crit screen` as the crit command runs it, whether or not cli.py registers it yet.
SCREEN = ("import sys; from crit.cli import cli, main; from crit.screening.screen import screen_command; "
          "cli.add_command(screen_command); sys.exit(main())")


def say(text: str = "") -> None:
    print(text, flush=True)


# ---- timing ---------------------------------------------------------------------------------


def per_record(func: Callable[[Any], Any], records: Sequence[Any], errors: tuple[type[Exception], ...],
               repeat: int) -> float:
    """Best time per record, in microseconds, over `repeat` passes over the records."""
    return min(_pass(func, records, errors) for _ in range(repeat)) / len(records) * 1e6


def compare(funcs: Sequence[Callable[[Any], Any]], records: Sequence[Any], errors: tuple[type[Exception], ...],
            repeat: int) -> list[float]:
    """Best time per record of each function, their passes interleaved (a, b, a, b, …) so that
    a noisy moment on a shared machine cannot fall on one side only."""
    best = [float("inf")] * len(funcs)
    for _ in range(repeat):
        for index, func in enumerate(funcs):
            best[index] = min(best[index], _pass(func, records, errors))
    return [b / len(records) * 1e6 for b in best]


def _pass(func: Callable[[Any], Any], records: Sequence[Any], errors: tuple[type[Exception], ...]) -> float:
    gc.collect()
    start = time.perf_counter()
    for record in records:
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every call timed
            func(record)
        except errors:
            pass
    return time.perf_counter() - start


def row(label: str, generated: float, baseline: float, target: float | None = None) -> None:
    ratio = baseline / generated
    verdict = ""
    if target is not None:
        verdict = f"target >= {target:.1f}x: {'met' if ratio >= target else 'MISSED'}"
    say(f"  {label:<46} {generated:9.1f} {baseline:10.1f} {ratio:8.2f}x  {verdict}")


# ---- agreement -----------------------------------------------------------------------------------


def outcomes_of(module: ModuleType, record: Any) -> tuple[str, dict[str, str]] | None:
    try:
        assessed = module.assess(record)
    except module.InvalidRecord:
        return None
    return assessed.decision.value, {c.id: o.value for c, o in zip(module.CRITERIA, assessed.outcomes, strict=True)}


def check_agreement(module: ModuleType, records: Sequence[Any], walker: naive.NaiveWalker,
                    interpreter: Any | None) -> None:
    """Stop the run unless every baseline agrees with the generated module on every record."""
    disagree: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for record in records:
        expected = outcomes_of(module, record)
        found: dict[str, Any] = {}
        for name, func, error in (("hand-written evaluate", handwritten.evaluate_by_hand, handwritten.Invalid),
                                  ("naive tree-walker", walker.evaluate, runtime.InvalidRecord)):
            try:
                found[name] = func(record)
            except error:
                found[name] = None
        try:
            found["hand-written decide"] = handwritten.decide_by_hand(record)
        except handwritten.Invalid:
            found["hand-written decide"] = None
        try:
            decided = module.decide(record).value
            screening = module.evaluate(record)
            explained = screening.explain()
            facts = (explained.decision.value, {c.id: c.outcome.value for c in explained.criteria})
            found["decide()"] = decided
            found["fast path vs facts"] = facts
        except module.InvalidRecord:
            found["decide()"] = found["fast path vs facts"] = None
        wanted = {"hand-written evaluate": expected, "naive tree-walker": expected, "fast path vs facts": expected,
                  "hand-written decide": expected and expected[0], "decide()": expected and expected[0]}
        for name, value in found.items():
            if value != wanted[name]:
                disagree[name] += 1
                examples.setdefault(name, str(record.get("id")))
        if interpreter is not None:
            try:
                theirs = interpreter.evaluate(record)
                got: Any = (theirs.decision.value, {c.id: c.outcome.value for c in theirs.criteria})
            except runtime.InvalidRecord:  # the interpreter's own runtime, not the module's copy
                got = None
            if got != expected:
                disagree["crit.interpret"] += 1
                examples.setdefault("crit.interpret", str(record.get("id")))
    checked = "hand-written evaluate and decide, naive tree-walker, decide(), fast path vs facts" + (
        ", crit.interpret" if interpreter is not None else "")
    if disagree:
        for name, n in disagree.items():
            say(f"  DISAGREE: {name} on {n} records (first: {examples[name]})")
        if any(name != "crit.interpret" for name in disagree):
            raise SystemExit("baselines disagree with the generated module: not timing them")
    else:
        say(f"  agreement on all {len(records):,} records: {checked}")


# ---- compile time ------------------------------------------------------------------------------


def compile_once(path: Path) -> tuple[float, float]:
    """Parse and check, then emit both artefacts. A synthetic protocol larger than the
    driver's limit on source files is compiled from its text, past that limit."""
    loaded = Loaded()
    start = time.perf_counter()
    if path.stat().st_size > MAX_SOURCE_BYTES:
        text = path.read_text(encoding="utf-8")
        protocol = check(parse(text, str(path)), [], "0" * 64)
        loaded.sources[protocol.source] = text
    else:
        protocol = load(path, loaded)
    middle = time.perf_counter()
    outputs(protocol, loaded)
    return middle - start, time.perf_counter() - middle


def compile_times(quick: bool, tmp: Path) -> None:
    compile_once(JY231)  # warm: grammar, unit registry, templates
    runs = [compile_once(JY231) for _ in range(20)]
    best = min(runs, key=sum)
    total = sum(best) * 1000
    say(f"  JY231 in process, parser warm:  {total:6.1f} ms  (parse and check {best[0] * 1000:.1f} ms, "
        f"emit {best[1] * 1000:.1f} ms)   target <= 50 ms: {'met' if total <= 50 else 'MISSED'}")
    crit = Path(sys.executable).parent / "crit"
    command = [str(crit)] if crit.exists() else [sys.executable, "-m", "crit.cli"]
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*command, "build", str(JY231), "-o", str(tmp / "build")], check=True, capture_output=True,
                       cwd=ROOT)
        walls.append(time.perf_counter() - start)
    wall = min(walls)
    say(f"  `crit build protocols/jy231.crit` as a process: {wall:5.2f} s   target <= 0.5 s: "
        f"{'met' if wall <= 0.5 else 'MISSED'}")
    say("  synthetic protocols, best of runs. 'per criterion': the time beyond the 10-criterion protocol's")
    say("  (the schema and fixed costs), per added criterion; 'gc off': the same with Python's cyclic")
    say("  garbage collector paused, which isolates the compiler's own work:")
    say(f"  {'criteria':>10} {'parse+check':>12} {'emit':>10} {'total':>10} {'per criterion':>14} {'gc off':>10}")
    base: tuple[float, float] | None = None
    for size in (10, 100, 1000, 10000):
        path = tmp / f"synthetic-{size}.crit"
        path.write_text(synthetic.protocol(size), encoding="utf-8")
        repeats = 1 if size >= 10000 else (2 if quick and size >= 1000 else 5)
        timed = min((compile_once(path) for _ in range(repeats)), key=sum)
        gc.collect()
        gc.disable()
        try:
            paused = min((compile_once(path) for _ in range(repeats)), key=sum)
        finally:
            gc.enable()
        if base is None:
            base = (sum(timed), sum(paused))
            marginal = ""
        else:
            marginal = (f"{(sum(timed) - base[0]) / (size - 10) * 1e6:11.0f} us "
                        f"{(sum(paused) - base[1]) / (size - 10) * 1e6:7.0f} us")
        say(f"  {size:>10,} {timed[0] * 1000:10.1f}ms {timed[1] * 1000:8.1f}ms {sum(timed) * 1000:8.1f}ms {marginal}")


# ---- module size ------------------------------------------------------------------------------

_IMPORT = """import importlib.util, resource, sys, time
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("synthetic_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["synthetic_module"] = module
spec.loader.exec_module(module)
took = time.perf_counter() - start
module.evaluate({})  # it works: every criterion run and explained on an empty record
module.evaluate({}).criteria
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def module_sizes(sizes: Sequence[int], tmp: Path) -> None:
    """The generated module of a synthetic protocol of N criteria: its size, and the time and
    peak memory of a fresh Python importing it (and evaluating and explaining one record)."""
    baseline = subprocess.run([sys.executable, "-c", "import resource; print(resource.getrusage("
                               "resource.RUSAGE_SELF).ru_maxrss * 1024)"], capture_output=True, text=True, check=True)
    empty = int(baseline.stdout)
    say(f"  {'criteria':>10} {'lines':>10} {'MB':>8} {'import':>10} {'peak memory':>12} {'beyond Python':>14}")
    for size in sizes:
        path = tmp / f"synthetic-{size}.crit"
        path.write_text(synthetic.protocol(size), encoding="utf-8")
        text = path.read_text(encoding="utf-8")
        module = emit_python(check(parse(text, path.name), [], "0" * 64), text)
        target = tmp / f"synthetic_{size}.py"
        target.write_text(module, encoding="utf-8")
        done = subprocess.run([sys.executable, "-c", _IMPORT, str(target)], capture_output=True, text=True,
                              check=True)
        took, peak = done.stdout.split()
        say(f"  {size:>10,} {module.count(chr(10)):>10,} {len(module.encode()) / 1e6:8.1f} {float(took):9.2f}s "
            f"{int(peak) / 2**20:8,.0f} MiB {(int(peak) - empty) / 2**20:10,.0f} MiB")
        target.unlink()
        for cached in tmp.glob("__pycache__/synthetic_*"):
            cached.unlink()


# ---- crit screen ------------------------------------------------------------------------------


class PeakMemory:
    """Samples the resident memory of a process and all its descendants (Linux /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def tree(self, pid: int) -> list[int]:
        out = [pid]
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                    for child in f.read().split():
                        out += self.tree(int(child))
        except OSError:
            pass
        return out

    def rss(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def watch(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, sum(self.rss(p) for p in self.tree(self.pid)))
            time.sleep(0.05)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def parallel_capacity() -> float:
    """How much faster this machine does two CPU-bound processes' work at once than one after
    the other (2.0 on two free cores; 1.0 where the CPUs shown are time-sliced onto one)."""
    spin = "import time\nx = 0\nfor i in range(6_000_000):\n    x += i\n"

    def timed(count: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - start

    one = min(timed(1) for _ in range(3))
    two = min(timed(2) for _ in range(3))
    return 2 * one / two


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def screen(records: Path, size: int, jobs: int, tmp: Path) -> tuple[float, int, float]:
    out = tmp / f"results-{size}-{jobs}.jsonl"
    cpu = cpu_of_children()
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", SCREEN, "screen", str(JY231), str(records), "-o", str(out),
                                "--jobs", str(jobs), "-q"], cwd=ROOT)
    memory = PeakMemory(process.pid)
    code = process.wait()
    wall = time.perf_counter() - start
    peak = memory.stop()
    if code not in (0, 3):
        raise SystemExit(f"crit screen failed with exit code {code}")
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    if lines != size:
        raise SystemExit(f"crit screen wrote {lines} rows for {size} records")
    out.unlink()
    return wall, peak, cpu_of_children() - cpu


def screen_times(size: int, tmp: Path) -> None:
    small = size // 10
    paths = {}
    for n in (small, size):
        path = tmp / f"cohort-{n}.jsonl"
        start = time.perf_counter()
        cohort.write(path, n)
        paths[n] = path
        say(f"  wrote {n:,} records ({path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - start:.0f} s")
    capacity = parallel_capacity()
    say(f"  this machine runs two CPU-bound processes at {capacity:.2f}x the throughput of one")
    say(f"  {'records':>10} {'jobs':>5} {'seconds':>9} {'records/s':>11} {'CPU seconds':>12} {'peak memory':>12}")
    for n in (small, size):
        for jobs in (1, 2):
            wall, peak, cpu = screen(paths[n], n, jobs, tmp)
            say(f"  {n:>10,} {jobs:>5} {wall:9.1f} {n / wall:11,.0f} {cpu:12.1f} {peak / 2**20:8,.0f} MiB")
    say("  Each run includes starting Python and compiling JY231. Peak memory is the resident memory of")
    say("  all the run's processes together: the same for 10x the records is what constant memory means.")
    say("  CPU seconds are summed over processes: with --jobs 2 the work splits over two processes, so the")
    say("  wall time falls by up to the machine's parallel capacity, less the spawn and transfer overhead.")


# ---- the run ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a couple of minutes")
    parser.add_argument("--cohort", type=int, help="records for the per-record timings")
    parser.add_argument("--screen", type=int, help="records for crit screen")
    parser.add_argument("--seed", type=int, default=231)
    parser.add_argument("--skip-screen", action="store_true")
    parser.add_argument("--module-sizes", type=int, nargs="*", metavar="N",
                        help="only measure the generated module of synthetic protocols of N criteria "
                             "(default 1000 10000 100000): size, import time, memory")
    args = parser.parse_args(argv)
    size = args.cohort or (10_000 if args.quick else 100_000)
    screen_size = args.screen or (100_000 if args.quick else 1_000_000)
    repeat = 3

    with tempfile.TemporaryDirectory(prefix="crit-bench-") as name:
        tmp = Path(name)
        if args.module_sizes is not None:
            say("generated module of a synthetic protocol (import in a fresh Python, then one record evaluated)")
            module_sizes(args.module_sizes or (1000, 10_000, 100_000), tmp)
            return 0
        loaded = Loaded()
        protocol = load(JY231, loaded)
        module_path = tmp / "jy231.py"
        module_path.write_text(outputs(protocol, loaded)["jy231.py"], encoding="utf-8")
        module = import_module(str(module_path), "_crit_bench_jy231")
        walker = naive.NaiveWalker(protocol)
        try:
            from crit.interpret import Interpreter  # being written alongside: optional
            interpreter: Any | None = Interpreter(protocol)
        except ImportError as err:
            interpreter = None
            say(f"note: crit.interpret is not importable yet ({err}); skipping the interpreter comparison")

        records = list(cohort.cohort(size, args.seed))
        decisions = Counter((outcomes_of(module, r) or ("unreadable",))[0] for r in records)
        mix = ", ".join(f"{100 * decisions[d] / size:.1f}% {d}"
                        for d in ("eligible", "ineligible", "needs review", "unreadable"))
        quick = " (quick)" if args.quick else ""
        say(f"JY231 benchmarks{quick}: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        say(f"cohort: {size:,} synthetic records (seed {args.seed}): {mix}")
        say()
        say("agreement (before timing)")
        check_agreement(module, records, walker, interpreter)
        say()

        errors = (module.InvalidRecord, handwritten.Invalid, runtime.InvalidRecord)
        say(f"per record, microseconds (best of {repeat} interleaved passes; slower evaluators on the first 20,000)")
        say(f"  {'':<46} {'generated':>9} {'baseline':>10} {'ratio':>9}")
        evaluate, by_hand = compare((module.evaluate, handwritten.evaluate_by_hand), records, errors, repeat)
        row("evaluate() vs hand-written, every outcome", evaluate, by_hand, 1.0)
        decide, decide_by_hand = compare((module.decide, handwritten.decide_by_hand), records, errors, repeat)
        row("decide() vs hand-written short-circuit", decide, decide_by_hand, 0.9)
        subset = records[: min(len(records), 20_000)]  # the slower evaluators, on fewer records
        assess, walked = compare((module.assess, walker.evaluate), subset, errors, repeat)
        row("assess() vs naive tree-walker", assess, walked)
        if interpreter is not None:
            fast, with_reasons, interpreted = compare(
                (module.evaluate, lambda r: module.evaluate(r).criteria, interpreter.evaluate), subset, errors, repeat)
            row("evaluate() vs crit.interpret", fast, interpreted)
            row("evaluate() with reasons read vs crit.interpret", with_reasons, interpreted)
        else:
            with_reasons = per_record(lambda r: module.evaluate(r).criteria, subset, errors, repeat)
        say(f"  {'(validate() alone: reading and checking the record)':<46} "
            f"{per_record(module.validate, records, errors, repeat):9.1f}")
        say(f"  {'(evaluate() with every reason read, .criteria)':<46} {with_reasons:9.1f}")
        say()
        say("compile time")
        compile_times(args.quick, tmp)
        if not args.skip_screen:
            say()
            say(f"crit screen (JSON Lines in and out, synthetic cohort, {os.cpu_count()} CPUs)")
            screen_times(screen_size, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
