"""The student edition: `python -m helpers.student [0-01 …]` writes `student/<notebook>.ipynb`.

The instructor notebook is the source. In each exercise the learner's part is a region of a code cell
between `### BEGIN SOLUTION` and `### END SOLUTION` — nbgrader's markers, so the notebooks also work
with `nbgrader generate_assignment`. Here nbgrader's own `ClearSolutions` replaces each region with a stub
that names the exercise and the function to write:

    raise NotImplementedError("Exercise 3 — Batch normalization: implement batchnorm_forward(); the checks below grade it")

and `ClearOutput` empties every output. The checks that follow each region grade the learner's code.
`restore(student, instructor)` puts the solutions back (the tests use it to prove nothing else changed).
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

from .session import ROOT

STUDENT = ROOT / "student"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
# The headings that name a learner's task, most specific last: "## Exercise 3 — …", "### Capstone Step 4 — …".
SECTION = re.compile(r"^#{2,3} ((?:Exercise|Capstone Step|Lecture|Part|Self-Study|Check|Milestone|Phase) [\d.]+[A-Z]?)"
                     r"(?:\s*[—–:-]\s*(.*))?$", re.M)
STUB = re.compile(r'^(\s*)raise NotImplementedError\("(.*?): implement (.*?); the checks below grade it"\)\s*$')


def has_solution(source: str) -> bool:
    return BEGIN in source


def short(title: str, limit: int = 60) -> str:
    """The heading's title cut at a word boundary, so the stub's message stays one readable line."""
    title = re.sub(r"[`*_]", "", title).strip()
    if len(title) <= limit:
        return title
    return title[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def task_of(source: str, begin_line: int) -> str:
    """What the learner implements: the nearest `def`/`class` above the region (`batchnorm_forward()`)."""
    above = source.splitlines()[:begin_line]
    for line in reversed(above):
        m = re.match(r"\s*(def|class)\s+(\w+)", line)
        if m:
            return f"{m.group(2)}()" if m.group(1) == "def" else f"class {m.group(2)}"
    return "the marked code"


def stub_message(section: str, source: str, begin_line: int) -> str:
    return f"{section}: implement {task_of(source, begin_line)}; the checks below grade it"


def tag(nb) -> int:
    """Give every cell with a solution region nbgrader's solution metadata (in place); returns how many.

    `make run` does this before saving, so the instructor notebooks are nbgrader source notebooks as they are:
    `nbgrader generate_assignment` accepts them without `--ClearSolutions.enforce_metadata=False`.
    """
    n = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and has_solution(cell.source):
            cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "schema_version": 3,
                                         "grade_id": f"cell-{cell.get('id', index)}"}
            n += 1
        elif "nbgrader" in cell.metadata:
            del cell.metadata["nbgrader"]
    return n


def make_student(nb):
    """A student copy of notebook `nb` (nbformat node): solution regions → stubs, outputs cleared."""
    from nbgrader.preprocessors import ClearOutput, ClearSolutions

    nb = copy.deepcopy(nb)
    tag(nb)
    resources = {"language": "python"}
    clear = ClearSolutions(enforce_metadata=False)
    section, n_regions = "This notebook", 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for name, title in SECTION.findall(cell.source):
                section = f"{name} — {short(title)}" if title else name
            continue
        if cell.cell_type != "code" or not has_solution(cell.source):
            continue
        # nbgrader puts one stub in every region of a cell; each region gets its own message here.
        lines = cell.source.splitlines()
        begins = [i for i, line in enumerate(lines) if BEGIN in line]
        parts, start = [], 0
        for b in begins:
            end = next(i for i in range(b, len(lines)) if END in lines[i])
            clear.code_stub = {"python": f'raise NotImplementedError("{stub_message(section, cell.source, b)}")'}
            region = copy.deepcopy(cell)
            region.source = "\n".join(lines[start:end + 1])
            region, _ = clear.preprocess_cell(region, resources, index)
            parts.append(region.source)
            start = end + 1
            n_regions += 1
        parts.append("\n".join(lines[start:]))
        cell.source = "\n".join(parts).rstrip("\n") + ("\n" if cell.source.endswith("\n") else "")
    nb, _ = ClearOutput().preprocess(nb, resources)
    nb.metadata["course_edition"] = {"student": True, "regions": n_regions}
    return nb


def regions(source: str) -> list[str]:
    """The solution regions of a cell, each from its BEGIN line to its END line inclusive."""
    out, lines, i = [], source.splitlines(), 0
    while i < len(lines):
        if BEGIN in lines[i]:
            j = next(k for k in range(i, len(lines)) if END in lines[k])
            out.append("\n".join(lines[i:j + 1]))
            i = j
        i += 1
    return out


def restore(student, instructor) -> list[str]:
    """The student cells' sources with each stub replaced by the instructor's region, in order."""
    out = []
    for s_cell, i_cell in zip(student.cells, instructor.cells, strict=True):
        solutions = iter(regions(i_cell.source))
        lines = [next(solutions) if STUB.match(line) else line for line in s_cell.source.splitlines()]
        out.append("\n".join(lines) + ("\n" if s_cell.source.endswith("\n") else ""))
    return out


def build(paths: list[Path], out_dir: Path = STUDENT) -> list[Path]:
    import nbformat

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        student = make_student(nbformat.read(path, as_version=4))
        target = out_dir / path.name
        nbformat.write(student, target)
        n = student.metadata["course_edition"]["regions"]
        print(f"  {path.name}: {n} exercise regions -> {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        written.append(target)
    return written


def main(argv=None) -> int:
    from .notebooks import find

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="stem prefixes (0-01) or module ids (0.1); default all")
    parser.add_argument("--out", type=Path, default=STUDENT)
    args = parser.parse_args(argv)
    build(find(args.notebooks), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
