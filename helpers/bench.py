"""`make bench`: each notebook's quick-profile wall time against its budget, plus the module benchmarks.

A module benchmark is a `run() -> list[dict]` function (rows with `module`, `name`, `ours`, `reference`,
`unit`, `note`) in the module's helper package, registered in `MODULE_BENCHMARKS`. Everything is printed
as a table and written to `results/bench.json`.

Without selectors it also times what CI does: `bash .ci/run` (venv install + `make test`) on a fresh clone of
the committed HEAD, against the 60-minute goal (CI's hard limit is 90).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .device import device_name
from .session import BUDGET_SECONDS, MODULES, RESULTS, ROOT, versions

FRESH_CLONE_GOAL_S = 3600  # CI kills a run at 5400 s; stay well inside it as notebooks are added

MODULE_BENCHMARKS = {
    "0.1": "helpers.ml.bench",
    "0.2": "helpers.nn.bench",
    "0.7": "helpers.lm_bench",
    "1.1": "helpers.quant.bench",
}


def notebook_rows(selectors: list[str]) -> list[dict]:
    from .notebooks import execute, find

    os.environ.setdefault("COURSE_PROFILE", "quick")
    os.environ["COURSE_RESULTS_DIR"] = tempfile.mkdtemp(prefix="bench-results-")  # timing runs leave results/ alone
    ids = {stem: module for module, (stem, _) in MODULES.items()}
    rows = []
    for path in find(selectors):
        module = ids[path.stem]
        print(f"▶ timing {path.name} …", flush=True)
        seconds = execute(path, save=False)
        budget = BUDGET_SECONDS[module]
        rows.append({"module": module, "name": f"notebook {path.stem} (quick profile)", "ours": round(seconds, 1),
                     "reference": budget, "unit": "s",
                     "note": "within budget" if seconds <= budget else "OVER BUDGET"})
    return rows


def module_rows(selectors: list[str]) -> list[dict]:
    rows = []
    for module, name in MODULE_BENCHMARKS.items():
        if selectors and module not in selectors and MODULES[module][0][:4] not in selectors:
            continue
        print(f"▶ benchmark {module} ({name}) …", flush=True)
        t0 = time.perf_counter()
        rows += importlib.import_module(name).run()
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def fresh_clone_row() -> dict:
    """Time `bash .ci/run` on a fresh clone of HEAD with the datasets mirror beside it, as CI runs it."""
    shared = Path(os.environ.get("COURSE_DATA_DIR") or ROOT.parent / "shared" / "datasets").resolve().parent
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as tmp:
        repo = Path(tmp) / "main"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        (Path(tmp) / "shared").symlink_to(shared)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSE_", "VIRTUAL_ENV"))} | {"CI": "true"}
        print(f"▶ fresh clone: bash .ci/run in {repo} …", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", ".ci/run"], cwd=repo, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    print("\n".join(f"  {line}" for line in tail), flush=True)
    ok = proc.returncode == 0
    return {"module": "course", "name": "fresh clone: bash .ci/run (install + make test)", "ours": round(seconds, 1),
            "reference": FRESH_CLONE_GOAL_S, "unit": "s",
            "note": ("within goal" if seconds <= FRESH_CLONE_GOAL_S else "OVER GOAL") if ok else "FAILED"}


def table(rows: list[dict]) -> str:
    head = f"{'module':<7}{'benchmark':<58}{'ours':>10}{'reference':>11}{'ratio':>8}  unit  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        ours, ref = r["ours"], r.get("reference")
        ratio = f"{ours / ref:.2f}" if isinstance(ref, (int, float)) and ref else ""
        ref_s = f"{ref:.4g}" if isinstance(ref, (int, float)) else "—"
        lines.append(f"{r['module']:<7}{r['name'][:57]:<58}{ours:>10.4g}{ref_s:>11}{ratio:>8}  "
                     f"{r.get('unit', ''):<5} {r.get('note', '')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("selectors", nargs="*", help="module ids (0.1) or stem prefixes (0-01); default all")
    parser.add_argument("--no-notebooks", action="store_true", help="skip timing the notebooks")
    parser.add_argument("--no-modules", action="store_true", help="skip the module benchmarks")
    parser.add_argument("--fresh-clone", action=argparse.BooleanOptionalAction, default=None,
                        help="time `bash .ci/run` on a fresh clone (default: only when no selector is given)")
    args = parser.parse_args(argv)
    rows = [] if args.no_notebooks else notebook_rows(args.selectors)
    rows += [] if args.no_modules else module_rows(args.selectors)
    if args.fresh_clone or (args.fresh_clone is None and not args.selectors):
        rows.append(fresh_clone_row())
    print("\n" + table(rows))
    out = RESULTS / "bench.json"
    previous = json.loads(out.read_text())["rows"] if out.exists() else []
    keep = [r for r in previous if (r["module"], r["name"]) not in {(x["module"], x["name"]) for x in rows}]
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": device_name(), "versions": versions(),
                               "rows": sorted(keep + rows, key=lambda r: (r["module"], r["name"]))}, indent=2) + "\n")
    print(f"\n-> {out}")
    over = [r for r in rows if r.get("note") in ("OVER BUDGET", "OVER GOAL", "FAILED")]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
