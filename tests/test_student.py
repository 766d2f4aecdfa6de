"""The student edition (`make student`): every exercise leaves code to the learner, and the edition is sound."""
import json
import re
from pathlib import Path

import nbformat
import pytest

from helpers import student
from test_project import REQUIRED_SECTIONS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
# The sections in which the learner must write code (each needs at least one marked region).
LEARNER_SECTIONS = ("## Exercise", "## Lecture", "## Self-Study")


def _toy():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    return new_notebook(cells=[
        new_markdown_cell("## Exercise 2 — Implement dropout"),
        new_code_cell('def dropout(x, p):\n    """Inverted dropout."""\n    ### BEGIN SOLUTION\n    keep = x > p\n'
                      '    return x * keep / (1 - p)\n    ### END SOLUTION\n\nprint(dropout)'),
        new_code_cell("check('dropout', True)", outputs=[{"output_type": "stream", "name": "stdout", "text": "✓"}],
                      execution_count=3),
    ])


def test_stub_names_the_section_and_the_function():
    st = student.make_student(_toy())
    src = st.cells[1].source
    assert 'raise NotImplementedError("Exercise 2 — Implement dropout: implement dropout(); the checks below grade it")' in src
    assert "keep = x > p" not in src and "BEGIN SOLUTION" not in src
    assert src.startswith('def dropout(x, p):\n    """Inverted dropout."""\n    raise') and src.endswith("print(dropout)")
    assert st.cells[2].outputs == [] and st.cells[2].execution_count is None
    assert st.cells[1].metadata["nbgrader"]["solution"] is True


def test_restore_gives_back_the_instructor_source():
    nb = _toy()
    nb.cells[1].source += "\n"  # a trailing newline survives too
    assert student.restore(student.make_student(nb), nb) == [c.source for c in nb.cells]


def _sections(nb) -> dict:
    """'## Exercise 3' -> number of marked regions in its code cells."""
    found, current = {}, None
    heading = re.compile(r"^(#{2,3} [A-Za-z -]+?) (\d+)\b", re.M)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for prefix, n in heading.findall(cell.source):
                current = f"{prefix} {n}"
                found.setdefault(current, 0)
        elif current is not None:
            found[current] += len(student.regions(cell.source))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_exercise_leaves_code_to_the_learner(path):
    nb = nbformat.read(path, as_version=4)
    required = REQUIRED_SECTIONS.get(path.stem, {})
    found = _sections(nb)
    for prefix, count in required.items():
        if prefix not in LEARNER_SECTIONS:
            continue
        for n in range(1, count + 1):
            assert found.get(f"{prefix} {n}", 0) >= 1, f"{path.name}: '{prefix} {n}' has no ### BEGIN SOLUTION region"
    for cell in nb.cells:
        assert cell.source.count(student.BEGIN) == cell.source.count(student.END), "unbalanced solution markers"
        if cell.cell_type != "code":
            assert student.BEGIN not in cell.source, "solution markers belong in code cells"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_edition_is_valid_and_contains_no_solution(path):
    nb = nbformat.read(path, as_version=4)
    st = student.make_student(nb)
    nbformat.validate(st)
    assert st.metadata["course_edition"]["regions"] >= 1
    text = json.dumps([c.source for c in st.cells])
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert all(not c.get("outputs") for c in st.cells if c.cell_type == "code")
    for s_cell, i_cell in zip(st.cells, nb.cells):
        outside = i_cell.source
        for region in student.regions(i_cell.source):
            outside = outside.replace(region, "")
        for region in student.regions(i_cell.source):
            for line in region.splitlines()[1:-1]:
                line = line.strip()
                if len(line) >= 16 and line not in outside:  # a distinctive solution line
                    assert line not in s_cell.source, f"solution text left in the student edition: {line!r}"
    assert student.restore(st, nb) == [c.source for c in nb.cells]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_edition_runs_until_the_first_stub(path, tmp_path, monkeypatch):
    """Executed, the student edition stops at its first exercise with the stub's message, not elsewhere."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    st = student.make_student(nbformat.read(path, as_version=4))
    first = next(i for i, c in enumerate(st.cells)
                 if c.cell_type == "code" and any(student.STUB.match(line) for line in c.source.splitlines()))
    client = NotebookClient(st, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as err:
        client.execute()
    assert err.value.ename == "NotImplementedError", f"first failure is not a stub: {err.value.ename}: {err.value.evalue}"
    assert re.match(r"^[A-Z][\w -]+ [\d.]+.*: implement .+; the checks below grade it$", err.value.evalue)
    failing = next(i for i, c in enumerate(st.cells)
                   if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs))
    assert failing >= first, "the first error comes before the first exercise"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_instructor_notebook_is_an_nbgrader_source(path):
    """`make run` tags each cell holding a solution region, so `nbgrader generate_assignment` accepts the notebook."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        assert bool(meta.get("solution")) == (cell.cell_type == "code" and student.has_solution(cell.source)), \
            f"{path.name}: nbgrader metadata out of date on {cell.source[:60]!r}: run `make run NB={path.stem[:4]}`"
