"""Progress bars that finish in committed outputs, and the figure style's promises."""
import matplotlib

matplotlib.use("Agg")

from helpers import plot, progress


def test_headless_bar_prints_one_final_line(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    total = 0
    for i in progress.progress_bar(range(7), desc="fit", leave=False):
        total += i
    out = capsys.readouterr().out
    assert total == 21
    assert out.count("\n") == 1 and "\r" not in out
    assert out.startswith("fit: 100%|") and "7/7 [" in out and ("it/s" in out or "s/it" in out)


def test_headless_postfix_does_not_print_a_live_line(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    bar = progress.progress_bar(range(3), desc="train")
    for i in bar:
        bar.set_postfix(loss=1.0 / (i + 1))
        bar.set_description("train")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "100%|" in out and "loss=0.333" in out


def test_headless_bar_reports_where_a_loop_stopped(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    with progress.progress_bar(total=10, desc="early stop") as bar:
        bar.update(4)
    assert " 40%|" in capsys.readouterr().out


def test_disabled_bar_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    list(progress.progress_bar(range(3), disable=True))
    assert capsys.readouterr().out == ""


def test_live_bar_is_tqdm_auto(monkeypatch):
    monkeypatch.delenv("COURSE_HEADLESS", raising=False)
    from tqdm.auto import tqdm

    bar = progress.progress_bar(range(2), disable=True)
    assert isinstance(bar, tqdm) and not isinstance(bar, progress.FinalLine)


def test_style_is_readable():
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    plot.set_style()
    assert mpl.rcParams["figure.dpi"] >= 110 and mpl.rcParams["savefig.dpi"] >= 110
    for key in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
                "legend.fontsize"):
        assert FontProperties(size=mpl.rcParams[key]).get_size_in_points() >= plot.MIN_FONT_PT, key
    for n, ncols in ((1, None), (2, None), (3, None), (6, 3)):
        fig, _ = plot.subplots(n, ncols)
        assert fig.get_figwidth() * fig.dpi >= 700
        matplotlib.pyplot.close(fig)
