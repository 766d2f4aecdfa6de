"""Show a helper's source in a notebook, so the notebook teaches code without copying it."""
from __future__ import annotations

import inspect


def show(obj) -> None:
    """Render the source of a function, class or module with syntax highlighting (plain text outside Jupyter)."""
    source = inspect.getsource(obj)
    where = inspect.getsourcefile(obj) or ""
    if "helpers" in where:
        where = where[where.rindex("helpers"):]
    try:
        from IPython import get_ipython
        from IPython.display import Code, Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"`{where}`"), Code(source, language="python"))
            return
    except ImportError:
        pass
    print(f"# {where}\n{source}")
