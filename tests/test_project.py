"""Project-level promises: the environment files agree, and every committed notebook is a clean, passing run."""
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers import session, show

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    ours = {_name(r): r for r in project["dependencies"]}
    theirs = {_name(r): r for r in pip if not r.startswith("-e")}
    assert theirs == ours  # same names and the same version ranges
    assert "-e ." in pip
    assert "torchvision" not in ours


def test_notebooks_follow_the_naming_scheme():
    stems = {stem for stem, _ in session.MODULES.values()}
    for nb in NOTEBOOKS:
        assert nb.stem in stems, f"{nb.name} is not in helpers.session.MODULES"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_a_clean_passing_run(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), "not executed top to bottom in one fresh run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{len(errors)} error outputs"
    assert re.search(r"start\(\"\d+\.\d+\"\)", "".join(code[0]["source"])), "first code cell must call start()"
    assert "finish()" in "".join(code[-1]["source"]), "last code cell must call finish()"
    results = ROOT / "results" / f"{path.stem}.json"
    assert results.exists(), f"no {results.name}: run `make run NB={path.stem[:4]}`"
    summary = json.loads(results.read_text())
    assert summary["checks"]["failed"] == 0 and summary["checks"]["passed"] > 0
    assert summary["profile"] == "quick"


def test_show_prints_source_outside_jupyter(capsys):
    show(session.P)
    out = capsys.readouterr().out
    assert "def P(quick, full):" in out and "helpers/session.py" in out


def test_show_unwraps_decorators(capsys):
    from helpers.makemore.backprop import backward  # decorated with @torch.no_grad()

    show(backward)
    out = capsys.readouterr().out
    assert "def backward(p: dict" in out and "helpers/makemore/backprop.py" in out and "_contextlib" not in out


def test_md_table_text(capsys):
    from helpers import md_table

    text = md_table(["model", "loss"], [["bigram", 2.45], ["mlp", "2.17"]])
    assert text.splitlines() == ["| model | loss |", "|---|---|", "| bigram | 2.45 |", "| mlp | 2.17 |"]
    assert capsys.readouterr().out.strip() == text


# The syllabus sections each notebook must have, as `<heading prefix> <n>` for n = 1..count.
REQUIRED_SECTIONS = {  # heading prefix -> how many numbered sections (1..n), or the exact labels
    "0-01-ml-fundamentals": {"## Exercise": 5, "### Capstone Step": 7},
    "0-02-deep-learning-foundations": {"## Exercise": 5, "### Capstone Step": 7},
    "0-03-cnns": {"## Exercise": 5, "### Capstone Step": 7},
    "0-04-rnns": {"## Exercise": 5, "### Capstone Step": 7},
    "0-05-transformers": {"## Exercise": 5, "### Capstone Step": 7},
    "0-07-zero-to-hero": {"## Lecture": 10, "### Milestone": 7, "## Check": 7, "### Phase": 5},
    "1-01-quantization-theory": {"## Exercise": 3, "### Capstone Step": 7},
    "1-02-advanced-quantization": {"## Exercise": 6, "### Part": ["A", "B"], "### Analysis": [""]},
    "1-03-compression": {"## Exercise": 5, "### Capstone Step": 5},
    "1-04-model-formats": {"## Exercise": 7, "### Capstone Step": 7},
    "1-05-cuda-kernels": {"## Exercise": 5, "### Capstone Step": 4},
    "1-06-profiling": {"## Exercise": 5, "### Capstone Step": 6},
    "2-01-inference-stack": {"## Exercise": 5, "### Capstone Step": 4},
    "2-02-serving-engines": {"## Self-Study": 3},
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_syllabus_section_is_there_and_ends_in_checks(path):
    required = REQUIRED_SECTIONS.get(path.stem)
    if required is None:
        pytest.skip(f"no section list for {path.stem} yet")
    cells = json.loads(path.read_text())["cells"]
    sections, current = {}, None  # "## Exercise 3" -> has a check call in its code cells
    heading = re.compile(r"^(#{2,3} [A-Za-z -]+?)(?: (\d+|[A-Z])\b|$| —)", re.M)
    for cell in cells:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            for prefix, label in heading.findall(src):
                if prefix in required:
                    current = f"{prefix} {label}".strip()
                    sections.setdefault(current, False)
        elif current is not None and re.search(r"\b(check\w*|cmp)\(", src):
            sections[current] = True
    for prefix, labels in required.items():
        for label in (range(1, labels + 1) if isinstance(labels, int) else labels):
            name = f"{prefix} {label}".strip()
            assert name in sections, f"{path.name}: no '{name} …' heading"
            assert sections[name], f"{path.name}: section '{name}' has no check before the next section"


# --- what a learner sees: readable figures, finished progress bars -------------------------------------------------
MIN_FIGURE_PX = 700  # every committed figure is full width: helpers.plot renders ≥ 7.2 in at 110 dpi


def _outputs(path):
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            yield cell, cell.get("outputs", [])


def _png_size(b64: str) -> tuple[int, int]:
    import base64
    import struct

    head = base64.b64decode(b64[:64])
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_figures_are_readable(path):
    for cell, outputs in _outputs(path):
        src = "".join(cell["source"])
        small = [m for m in re.findall(r"\b(?:fontsize|labelsize|titlesize)\s*=\s*(\d+(?:\.\d+)?)", src) if float(m) < 8]
        assert not small, f"{path.name}: text under 8 pt in a figure ({small}) in cell {src[:80]!r}"
        for out in outputs:
            png = out.get("data", {}).get("image/png")
            if png:
                width, height = _png_size(png)
                assert width >= MIN_FIGURE_PX, f"{path.name}: a {width}x{height} px figure (< {MIN_FIGURE_PX} px wide) " \
                                               f"in cell {src[:80]!r}"


def _rendered(text: str) -> list[str]:
    """Text as a terminal shows it: each line is what follows its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_progress_bars_are_finished(path):
    for cell, outputs in _outputs(path):
        src = "".join(cell["source"])
        assert "tqdm.auto" not in src and "from tqdm" not in src, f"{path.name}: use helpers.progress_bar, not tqdm"
        for out in outputs:
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            for line in _rendered(text):
                for pct in re.findall(r"(\d+)%\|", line):
                    assert pct == "100", f"{path.name}: an unfinished progress bar in the committed output: {line!r}"
            assert "HBox(children=" not in text, f"{path.name}: a progress widget saved as its text fallback"
