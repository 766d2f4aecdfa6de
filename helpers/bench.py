"""`make bench`: each notebook's quick-profile wall time against its budget, plus the module benchmarks.

A module benchmark is a `run() -> list[dict]` function (rows with `module`, `name`, `ours`, `reference`,
`unit`, `note`) in the module's helper package, registered in `MODULE_BENCHMARKS`. Everything is printed
as a table and written to `results/bench.json`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

from .device import device_name
from .session import BUDGET_SECONDS, MODULES, RESULTS, versions

MODULE_BENCHMARKS = {
    "0.1": "helpers.ml.bench",
    "0.2": "helpers.nn.bench",
    "0.7": "helpers.lm_bench",
}


def notebook_rows(selectors: list[str]) -> list[dict]:
    from .notebooks import execute, find

    import tempfile

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
    args = parser.parse_args(argv)
    rows = [] if args.no_notebooks else notebook_rows(args.selectors)
    rows += module_rows(args.selectors)
    print("\n" + table(rows))
    out = RESULTS / "bench.json"
    previous = json.loads(out.read_text())["rows"] if out.exists() else []
    keep = [r for r in previous if (r["module"], r["name"]) not in {(x["module"], x["name"]) for x in rows}]
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": device_name(), "versions": versions(),
                               "rows": sorted(keep + rows, key=lambda r: (r["module"], r["name"]))}, indent=2) + "\n")
    print(f"\n-> {out}")
    over = [r for r in rows if r.get("note") == "OVER BUDGET"]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
