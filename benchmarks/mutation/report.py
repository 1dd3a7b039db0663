"""Write benchmarks/mutation/REPORT.md from mutmut's results (``make mutate`` runs mutmut, then this).

Per guarantee module (``[tool.mutmut] only_mutate`` in pyproject.toml): how many mutants the
focused tests killed, which survived, and for each survivor either the reason it is an
equivalent mutant (benchmarks/mutation/explained.toml) or "open". Exits 1 when, over the
modules that have focused tests, fewer than ``--min-score`` percent of the non-equivalent
mutants were killed, or when a survivor is open.

Usage: python benchmarks/mutation/report.py [--min-score 90] [--out benchmarks/mutation/REPORT.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# mutmut's statuses that mean the mutant was detected. A timeout is not among them: on a shared, niced
# machine a mutant's tests can simply be starved past mutmut's wall-clock limit, so timeouts are left out
# of the score (neither killed nor survived) and listed by name, to be rerun on an idle machine.
# A segfault is the test process crashing on the mutant: the tests failed, so it counts as killed.
KILLED = {"killed", "caught by type check", "segfault"}


def _mutmut(*args: str) -> str:
    # mutmut reads pyproject.toml and mutants/ from the working directory; no PYTHONPATH of ours leaks in.
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=REPO, env=env, check=True,
                          capture_output=True, text=True).stdout


def module_of(mutant: str) -> str:
    """``edgeleuk.runtime.staged.x__score_subset__mutmut_3`` -> ``edgeleuk/runtime/staged.py``."""
    head = mutant.split(".xǁ")[0] if ".xǁ" in mutant else mutant.split(".x_")[0]
    return head.replace(".", "/") + ".py"


def statuses() -> dict[str, str]:
    """Every mutant's status, as ``mutmut results --all true`` prints it."""
    out = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            out[name] = status
    return out


def diff_of(mutant: str) -> str:
    """The changed lines of one mutant (``mutmut show``), without the file header."""
    lines = _mutmut("show", mutant).splitlines()
    return "\n".join(ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


def _table(by_module: dict[str, Counter], explained: dict[str, str], names: dict[str, list[str]]) -> list[str]:
    rows = ["| module | mutants | not run | timeout | killed | survived: equivalent | survived: open | "
            "no tests | killed of non-equivalent decided |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for module, counts in by_module.items():
        equivalent = sum(1 for n in names[module] if n in explained)
        decided = sum(counts.values()) - counts["not checked"] - counts["timeout"]
        killed = sum(counts[s] for s in KILLED)
        score = f"{100 * killed / (decided - equivalent):.1f} %" if decided - equivalent else "-"
        rows.append(f"| `{module}` | {sum(counts.values())} | {counts['not checked']} | {counts['timeout']} | "
                    f"{killed} | {equivalent} | "
                    f"{counts['survived'] - equivalent} | {counts['no tests']} | {score} |")
    return rows


def build(results: dict[str, str], explained: dict[str, str], min_score: float) -> tuple[str, bool]:
    """The report's text, and whether it meets ``min_score`` with no open survivor."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    modules = config["only_mutate"]
    by_module: dict[str, Counter] = {m: Counter() for m in modules}
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, status in sorted(results.items()):
        by_module.setdefault(module_of(name), Counter())[status] += 1
        if status == "survived":
            survivors[module_of(name)].append(name)
    # A module counts once its focused tests ran on some of its mutants; "not checked" ones (a partial
    # run) are left out, "no tests" ones count as not killed.
    tested = [m for m, c in by_module.items() if sum(c.values()) - c["not checked"] > c["no tests"]]
    total = sum(sum(by_module[m].values()) - by_module[m]["not checked"] - by_module[m]["timeout"] for m in tested)
    killed = sum(by_module[m][s] for m in tested for s in KILLED)
    equivalent = sum(1 for m in tested for n in survivors[m] if n in explained)
    open_ = [n for m in tested for n in survivors[m] if n not in explained]
    score = 100 * killed / max(total - equivalent, 1)
    untested = [m for m in by_module if m not in tested]
    lines = [
        "# Mutation testing: the guarantee modules",
        "",
        f"Written by `benchmarks/mutation/report.py` after `make mutate` (mutmut {version('mutmut')}, "
        f"{dt.date.today().isoformat()}). Each mutant is one small change to a module that carries a "
        "guarantee; the focused tests listed in `[tool.mutmut]` (pyproject.toml) that run the changed "
        "function must fail. An equivalent mutant changes no behaviour a caller can see; why, for each, is "
        "in `benchmarks/mutation/explained.toml`.",
        "",
        f"**{killed} of {total - equivalent} non-equivalent mutants killed ({score:.1f} %)** among those "
        f"decided (run, and not timed out); {equivalent} survivors are equivalent, {len(open_)} open.",
        "",
        *_table(by_module, explained, survivors),
        "",
    ]
    if untested:
        lines += [f"Not in the score: {', '.join(f'`{m}`' for m in untested)} (no focused test ran their "
                  "mutants in this run).", ""]
    partial = [m for m in tested if by_module[m]["not checked"]]
    if partial:
        lines += [f"Run in part: {', '.join(f'`{m}`' for m in partial)} (the mutants under \"not run\" were "
                  "not tested and are left out of the score).", ""]
    for module in by_module:
        if not survivors[module]:
            continue
        lines += [f"## Survivors in `{module}`", ""]
        for name in survivors[module]:
            why = explained.get(name, "**open**: no test kills it yet")
            lines += [f"- `{name}`: {why}", "", "  ```diff", *("  " + d for d in diff_of(name).splitlines()),
                      "  ```", ""]
    timeouts = [n for n, st in sorted(results.items()) if st == "timeout"]
    if timeouts:
        lines += ["## Timeouts", "", "Left out of the score; each can be rerun with `mutmut run NAME` on an idle "
                  "machine (`mutmut show NAME` prints the change).", "", *(f"- `{n}`" for n in timeouts), ""]
    stale = sorted(set(explained) - set(results))
    if stale:
        lines += ["## Explanations for mutants that no longer exist", "", *(f"- `{n}`" for n in stale), ""]
    return "\n".join(lines), score >= min_score and not open_


def main() -> int:
    """Write the report; 0 when it meets the score with no open survivor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=HERE / "REPORT.md")
    args = parser.parse_args()
    explained = tomllib.loads((HERE / "explained.toml").read_text())["equivalent"]
    results = statuses()
    if not results:
        print("no mutmut results: run `make mutate` (or `mutmut run`) first", file=sys.stderr)
        return 1
    text, ok = build(results, explained, args.min_score)
    args.out.write_text(text)
    print(text.split("\n\n")[2])
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
