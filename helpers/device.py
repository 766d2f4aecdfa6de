"""One place that decides where tensors live, and how GPU-only code says it was skipped."""
from __future__ import annotations

import functools
import os


def has_cuda() -> bool:
    """True when torch sees a CUDA device (and `COURSE_DEVICE` does not force the CPU)."""
    if os.environ.get("COURSE_DEVICE", "").lower() == "cpu":
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def device():
    """The torch device every notebook uses: CUDA when present, else CPU."""
    import torch

    return torch.device("cuda" if has_cuda() else "cpu")


def device_name() -> str:
    """`cuda:<GPU name>` or `cpu:<processor> x<cores>`, as recorded in results files."""
    if has_cuda():
        import torch

        return f"cuda:{torch.cuda.get_device_name(0)}"
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    import platform

    return f"cpu:{model or platform.processor() or platform.machine()} x{os.cpu_count()}"


def requires_gpu(reason: str) -> bool:
    """`if requires_gpu("times the real kernel"):` — True on CUDA, else prints why it is skipped."""
    if has_cuda():
        return True
    print(f"⏭  skipped on this machine (no CUDA device): {reason}")
    return False


def gpu_only(reason: str):
    """Decorator form of `requires_gpu`: the function runs on CUDA, else returns None after a skip line."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if requires_gpu(reason):
                return fn(*args, **kwargs)
            return None

        return inner

    return wrap
