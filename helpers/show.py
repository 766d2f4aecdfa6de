"""Show a helper's source in a notebook, so the notebook teaches code without copying it."""
from __future__ import annotations

import inspect


def show(obj) -> None:
    """Render the source of a function, class or module with syntax highlighting (plain text outside Jupyter)."""
    obj = inspect.unwrap(obj)  # the function itself, not a decorator's wrapper (e.g. @torch.no_grad())
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


def markdown_table(header: list, rows: list) -> str:
    """The Markdown text of a small table: a header row, then one row per list of cells."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def md_table(header: list, rows: list) -> str:
    """Display `markdown_table(header, rows)` (rendered in Jupyter, printed elsewhere); returns its text."""
    text = markdown_table(header, rows)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return text
    except ImportError:
        pass
    print(text)
    return text
