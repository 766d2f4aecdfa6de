import os

import pytest

from helpers import session

# nbval's kernels inherit this: progress bars print one final line instead of a widget (helpers.progress).
os.environ["COURSE_HEADLESS"] = "1"


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A course run whose results go to a temporary folder."""
    monkeypatch.setattr(session, "RESULTS", tmp_path / "results")
    monkeypatch.delenv("COURSE_RESULTS_DIR", raising=False)
    r = session.start("0.1")
    yield r
    session._current = None
