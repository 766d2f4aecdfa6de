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


def md_table(header: list, rows: list) -> str:
    """Display a small Markdown table (rendered in Jupyter, printed elsewhere); returns its Markdown text."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines)
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
