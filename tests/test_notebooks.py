"""The headless runner's plain mode (helpers/notebooks.py): code cells run in order in one namespace, in the notebook's
folder, without Jupyter; a failure names its cell; --keep-going runs the rest and still fails at the end."""
import json

import pytest

from helpers import notebooks


def write_notebook(path, *sources):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# title"]}]
    cells += [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": [s]}
              for s in sources]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_plain_runs_code_cells_in_one_namespace_in_the_notebook_folder(tmp_path, capsys):
    nb = write_notebook(tmp_path / "nb.ipynb", "import os\nx = 2", "print('x is', x * 21, os.getcwd())")
    notebooks.execute_plain(nb)
    out = capsys.readouterr().out
    assert f"x is 42 {tmp_path}" in out and "code cell 2/2" in out


def test_plain_stops_at_the_first_failing_cell(tmp_path, capsys):
    nb = write_notebook(tmp_path / "nb.ipynb", "raise KeyError('boom')", "print('after')")
    with pytest.raises(KeyError):
        notebooks.execute_plain(nb)
    assert "after" not in capsys.readouterr().out


def test_keep_going_runs_later_cells_then_names_each_failure(tmp_path, capsys):
    nb = write_notebook(tmp_path / "nb.ipynb", "raise KeyError('boom')", "y = undefined_name", "print('after')")
    with pytest.raises(RuntimeError, match=r"2 of 3 code cells failed: cell 1: KeyError.*cell 2: NameError"):
        notebooks.execute_plain(nb, keep_going=True)
    assert "after" in capsys.readouterr().out


def test_flags_may_come_before_the_notebooks(capsys):
    with pytest.raises(SystemExit, match="no notebook matches '9-99'"):
        notebooks.main(["run", "--no-save", "--plain", "9-99"])
