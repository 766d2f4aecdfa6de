import torch

from helpers import device, gpu_only, has_cuda, requires_gpu


def test_device_matches_torch():
    assert device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_course_device_env_forces_cpu(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert not has_cuda() and device().type == "cpu"
    assert requires_gpu("needs a GPU") is False


def test_gpu_only_prints_skip_reason(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")

    @gpu_only("times the real kernel")
    def timed():
        return 42

    assert timed() is None
    assert "skipped on this machine (no CUDA device): times the real kernel" in capsys.readouterr().out


def test_no_direct_cuda_calls_in_course_code():
    """Only the device helper decides where tensors go."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = [str(p) for p in [*root.glob("helpers/**/*.py"), *root.glob("notebooks/*.ipynb")]
                 if ".cuda()" in p.read_text()]
    assert offenders == []
