"""Execute course notebooks headless: `python -m helpers.notebooks run [0-01 …] [--no-save] [--plain]`.

Used by `make run` (outputs saved in place, in execution order), `make bench` (timings) and
`make test-gpu` (full profile, nothing overwritten). `--plain` runs the code cells in this Python process, without
Jupyter, for a machine that has the numerical stack but no Jupyter and no package index (the GPU lane's lent machines).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .session import MODULES, ROOT

NOTEBOOKS = ROOT / "notebooks"


def find(selectors: list[str] | None = None) -> list[Path]:
    """Notebooks matching stem prefixes (`0-01`) or module ids (`0.1`); all of them when none given."""
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not selectors:
        return paths
    out = []
    for sel in selectors:
        prefix = MODULES[sel][0] if sel in MODULES else sel
        hits = [p for p in paths if p.stem.startswith(prefix)]
        if not hits:
            raise SystemExit(f"no notebook matches {sel!r}; have: {', '.join(p.stem for p in paths)}")
        out += hits
    return out


def execute(path: Path, save: bool = True, timeout: int = 900) -> float:
    """Run one notebook top to bottom in a fresh kernel; returns wall seconds."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["COURSE_HEADLESS"] = "1"  # progress bars print their final line, not a widget (helpers.progress)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - t0
        if save:
            from .student import tag

            tag(nb)  # nbgrader's solution metadata on every cell with a `### BEGIN SOLUTION` region
            nbformat.write(nb, path)
    return seconds


def execute_plain(path: Path, keep_going: bool = False) -> float:
    """Run one notebook's code cells in order in a fresh namespace of this process, printing as they go; returns wall
    seconds. No kernel, no saved outputs: for machines without Jupyter. A failing cell stops the notebook, naming it;
    with `keep_going` (make's -k) every later cell still runs, so that the closing `finish()` records what did run,
    and the failures are raised together at the end."""
    import json
    import traceback

    import matplotlib

    matplotlib.use("Agg")  # figures are drawn (their code runs) but never shown
    import matplotlib.pyplot as plt

    os.environ["COURSE_HEADLESS"] = "1"
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    namespace = {"__name__": "__main__", "__file__": str(path)}
    failed = []
    cwd = os.getcwd()
    os.chdir(path.parent)  # where Jupyter would run it
    t0 = time.perf_counter()
    try:
        for i, cell in enumerate(cells, 1):
            print(f"── {path.stem}, code cell {i}/{len(cells)}", flush=True)
            try:
                exec(compile("".join(cell["source"]), f"<{path.stem} code cell {i}>", "exec"), namespace)
            except Exception as exc:
                if not keep_going:
                    raise
                traceback.print_exc()
                failed.append(f"cell {i}: {type(exc).__name__}: {exc}")
            plt.close("all")
    finally:
        os.chdir(cwd)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(cells)} code cells failed: " + "; ".join(failed))
    return time.perf_counter() - t0


def modules_table() -> str:
    """The README's module table: notebook link, status and quick-profile CPU time from results/*.json."""
    import json

    from .session import BUDGET_SECONDS, RESULTS

    rows = ["| module | notebook | status | CPU time (quick) | checks |", "|---|---|---|---:|---:|"]
    for module, (stem, title) in MODULES.items():
        path = NOTEBOOKS / f"{stem}.ipynb"
        results = RESULTS / f"{stem}.json"
        if path.exists() and results.exists():
            r = json.loads(results.read_text())
            ok = r["checks"]["failed"] == 0
            rows.append(f"| {module} | [{title}](notebooks/{stem}.ipynb) | {'✅ complete' if ok else '❌ failing'} "
                        f"| {r['seconds']:.0f} s / {BUDGET_SECONDS[module]} s | {r['checks']['passed']} |")
        else:
            rows.append(f"| {module} | {title} | planned | — | — |")
    return "\n".join(rows)


def update_readme() -> None:
    """Rewrite the table between the README's `modules:start` / `modules:end` markers."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split("<!-- modules:start", 1)
    marker_line, rest = rest.split("\n", 1)
    _, tail = rest.split("<!-- modules:end -->", 1)
    readme.write_text(f"{head}<!-- modules:start{marker_line}\n{modules_table()}\n<!-- modules:end -->{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["run"])
    parser.add_argument("notebooks", nargs="*", help="stem prefixes (0-01) or module ids (0.1)")
    parser.add_argument("--no-save", action="store_true", help="do not write outputs back")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--plain", action="store_true", help="no Jupyter: run the code cells in this process "
                        "(implies --no-save)")
    parser.add_argument("--keep-going", action="store_true", help="with --plain: run every cell even after one fails")
    args = parser.parse_intermixed_args(argv)  # flags before the notebooks too: `run --no-save 1-05`
    failures = 0
    for path in find(args.notebooks):
        print(f"▶ {path.name} …", flush=True)
        try:
            seconds = (execute_plain(path, args.keep_going) if args.plain
                       else execute(path, save=not args.no_save, timeout=args.timeout))
            print(f"  ✓ {path.name} in {seconds:.1f} s", flush=True)
        except Exception as exc:  # report every notebook, then fail
            failures += 1
            print(f"  ✗ {path.name}: {type(exc).__name__}: {str(exc)[-2000:]}", flush=True)
    if not (args.no_save or args.plain):
        update_readme()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
