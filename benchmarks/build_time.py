"""`crit build` and `crit check` of JY231 as whole processes: start Python, import, parse, check, emit.

    python benchmarks/build_time.py                    # median of 9 runs of each command
    python benchmarks/build_time.py --against HEAD~3   # paired with an older revision, run by run
    python benchmarks/build_time.py --against /tmp/x   # or with another tree (its src/ on PYTHONPATH)
    python benchmarks/build_time.py --imports          # and what `import crit.cli` costs, module by module
    python benchmarks/build_time.py --instructions     # and how many instructions each command executes

The machine is shared, so one run says little: each command runs `--runs` times, the variants
interleaved run by run, and the figures are medians (wall-clock and CPU time of the child), with
the load average before and after. With `--against REV` the older source (`git archive REV src
grammar`) runs on the same interpreter and packages through PYTHONPATH, and each run of the
current tree is paired with the run of REV next to it: the ratio printed is the median of the
paired ratios, which the load moves far less than either time.

`--instructions` also counts the instructions each command executes once, under valgrind's
callgrind: about fifty times slower than a run, but the same count on a busy machine as on a quiet
one, so a change is measured even when the wall-clock times are not.

Python's bytecode cache is on by default (in a temporary PYTHONPYCACHEPREFIX, warmed by one
unmeasured run), as in an installed crit; `--no-bytecode` measures with PYTHONDONTWRITEBYTECODE
set and no cache, so every crit module is compiled from source on every run.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JY231 = ROOT / "protocols" / "jy231.crit"
CRIT = "import sys; from crit.cli import main; sys.exit(main())"
TARGET = 0.5  # seconds, for `crit build` (issue 9 item 7)


@dataclass
class Variant:
    """One source tree of crit to run: the working tree, or an older revision unpacked."""

    name: str
    env: dict[str, str]
    walls: dict[str, list[float]] = field(default_factory=dict)
    cpus: dict[str, list[float]] = field(default_factory=dict)


def environment(src: Path | None, bytecode: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    if bytecode is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    return env


def unpack(revision: str, into: Path) -> Path:
    """`src/` and `grammar/` of a revision, as files, without touching the repository."""
    archive = subprocess.run(["git", "archive", revision, "src", "grammar"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def commands(out: Path) -> dict[str, list[str]]:
    """The commands timed, and two that show where their time goes: starting Python, importing."""
    return {
        # the evaluator and the rendering, as issue 9's target was set
        "crit build protocols/jy231.crit --sql none": [sys.executable, "-c", CRIT, "build", str(JY231), "-o",
                                                       str(out), "--sql", "none"],
        # and the DuckDB query too, as this repository's [tool.crit] asks
        "crit build protocols/jy231.crit": [sys.executable, "-c", CRIT, "build", str(JY231), "-o", str(out)],
        "crit check protocols/jy231.crit": [sys.executable, "-c", CRIT, "check", str(JY231)],
        "(python -c 'import crit.cli')": [sys.executable, "-c", "import crit.cli"],
        "(python -c 'pass')": [sys.executable, "-c", "pass"],
    }


def run_once(command: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def instructions(command: Sequence[str], env: dict[str, str]) -> int:
    """The instructions one run of `command` executes, counted by valgrind's callgrind."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command], env=env,
                          cwd=ROOT, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind {' '.join(command[2:])} failed ({done.returncode}): {done.stderr[-500:]}")
    return int(found.group(1))


def which_crit(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", "import crit; print(crit.__file__)"], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()


def measure(variants: Sequence[Variant], runs: int, out: Path) -> None:
    """Every command of every variant once per round, the variants' order alternating by round."""
    for variant in variants:
        for name, command in commands(out).items():
            run_once(command, variant.env)  # warm: bytecode cache, file system cache
            variant.walls[name] = []
            variant.cpus[name] = []
    for round_ in range(runs):
        order = variants if round_ % 2 == 0 else list(reversed(variants))
        for name, command in commands(out).items():
            for variant in order:
                wall, cpu = run_once(command, variant.env)
                variant.walls[name].append(wall)
                variant.cpus[name].append(cpu)


def importtime(env: dict[str, str], top: int) -> list[str]:
    """The modules that `import crit.cli` spends most on, by cumulative microseconds."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import crit.cli"], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2].rstrip()))
    rows.sort(reverse=True)
    return [f"  {total / 1000:8.1f} ms {own / 1000:8.1f} ms  {name}" for total, own, name in rows[:top]]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="measured runs of each command (at least 7)")
    parser.add_argument("--against", metavar="REV", help="also run this git revision (or a directory holding "
                        "a crit tree: DIR/src), paired run by run")
    parser.add_argument("--no-bytecode", action="store_true", help="no .pyc cache: compile crit on every run")
    parser.add_argument("--imports", action="store_true", help="print what `import crit.cli` costs")
    parser.add_argument("--instructions", action="store_true", help="count each command's instructions once "
                        "(valgrind's callgrind; slow, but the machine's load does not move the count)")
    args = parser.parse_args(argv)
    if args.runs < 7:
        parser.error("--runs must be at least 7")
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind")
    with tempfile.TemporaryDirectory(prefix="crit-build-time-") as name:
        tmp = Path(name)
        bytecode = None if args.no_bytecode else tmp / "pycache"
        variants = [Variant("working tree", environment(None, bytecode))]
        if args.against:
            tree = Path(args.against)
            src = tree / "src" if (tree / "src" / "crit").is_dir() else unpack(args.against, tmp / "before")
            variants.append(Variant(args.against, environment(src, bytecode)))
        for variant in variants:
            print(f"{variant.name}: crit from {which_crit(variant.env)}")
        cache = "bytecode cache on" if bytecode else "no bytecode cache (PYTHONDONTWRITEBYTECODE)"
        print(f"Python {sys.version.split()[0]}, {cache}; load average {load()}")
        measure(variants, args.runs, tmp / "out")
        print(f"load average after: {load()}")
        print(f"median of {args.runs} runs, seconds: wall-clock (CPU of the process)")
        if len(variants) == 2:
            print(f"paired ratio: the median over runs of {variants[1].name}'s time / the working tree's "
                  "in the same round (above 1: the working tree is faster)")
        for name in commands(tmp):
            line = f"  {name:<45}"
            for variant in variants:
                line += (f"  {variant.name}: {statistics.median(variant.walls[name]):5.3f} "
                         f"({statistics.median(variant.cpus[name]):5.3f})")
            if len(variants) == 2:
                now, then = variants
                paired = statistics.median(b / a for a, b in zip(now.walls[name], then.walls[name], strict=True))
                line += f"  paired ratio {paired:4.2f}x"
            if name.endswith("--sql none"):
                met = statistics.median(variants[0].walls[name]) <= TARGET
                line += f"  target <= {TARGET} s: {'met' if met else 'MISSED'}"
            print(line)
        if args.instructions:
            print("instructions executed, millions (valgrind --tool=callgrind), one run each")
            for name, command in commands(tmp / "out").items():
                if name == "crit build protocols/jy231.crit":
                    continue  # the SQL backend's, measured by benchmarks/sql.py
                counts = [instructions(command, variant.env) for variant in variants]
                line = f"  {name:<45}" + "".join(f"  {v.name}: {c / 1e6:7.0f}" for v, c in zip(variants, counts,
                                                                                                strict=True))
                if len(counts) == 2:
                    line += f"  ratio {counts[1] / counts[0]:4.2f}x"
                print(line)
        if args.imports:
            for variant in variants:
                print(f"`python -X importtime -c 'import crit.cli'`, {variant.name}: cumulative, own, module")
                print("\n".join(importtime(variant.env, 25)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
