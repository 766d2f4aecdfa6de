"""The course run context: one call at the top of a notebook, one at the end.

`start()` makes a notebook reproducible and self-describing (seeds, profile, device, timer);
`finish()` writes what it measured to `results/<stem>.json`, the file the README, the tests and
`make bench` read.
"""
from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
PROFILES = ("quick", "full")

# module id -> (notebook stem, title). One table for the whole course.
MODULES = {
    "0.1": ("0-01-ml-fundamentals", "Core Machine Learning Fundamentals"),
    "0.2": ("0-02-deep-learning-foundations", "Deep Learning Foundations"),
    "0.3": ("0-03-cnns", "Convolutional Neural Networks"),
    "0.4": ("0-04-rnns", "Recurrent Neural Networks and Sequence Modeling"),
    "0.5": ("0-05-transformers", "Transformer Architecture Deep Dive"),
    "0.6": ("0-06-advanced-dl", "Advanced Deep Learning Concepts"),
    "0.7": ("0-07-zero-to-hero", "Implementing GPT from Scratch (Zero to Hero)"),
    "0.8": ("0-08-pytorch-mastery", "PyTorch Mastery and Best Practices"),
    "0.9": ("0-09-dl-theory", "Mathematical Deep Learning Theory"),
    "0.10": ("0-10-paper-marathon", "Research Paper Implementation Marathon"),
    "1.1": ("1-01-quantization-theory", "Fundamentals of Quantization Theory"),
    "1.2": ("1-02-advanced-quantization", "Advanced Quantization Techniques"),
    "1.3": ("1-03-compression", "Broader Model Compression Strategies"),
    "1.4": ("1-04-model-formats", "Model Formats and Conversion Pipelines"),
    "1.5": ("1-05-cuda-kernels", "CUDA Kernels for Quantized Operations"),
    "1.6": ("1-06-profiling", "Profiling Quantized Models"),
    "2.1": ("2-01-inference-stack", "Modern AI Inference Stack Architecture"),
    "2.2": ("2-02-serving-engines", "Deep Dive into Serving Engines"),
}

# Quick-profile wall-clock budget per notebook on a 2-core CPU, in seconds (checked by `make bench`).
BUDGET_SECONDS = {module: 150 for module in MODULES} | {"0.7": 360, "1.2": 360, "1.3": 300, "2.2": 300}


def results_dir() -> Path:
    """Where `finish()` writes: `results/`, or `COURSE_RESULTS_DIR` when set.

    `make test` and `make bench` re-execute notebooks to test and time them; they point this at a
    scratch folder so that only `make run` (which also saves the outputs) rewrites the committed record.
    """
    return Path(os.environ.get("COURSE_RESULTS_DIR") or RESULTS)


def profile() -> str:
    """The active profile, from `COURSE_PROFILE` (default `quick`)."""
    name = os.environ.get("COURSE_PROFILE", "quick").strip().lower() or "quick"
    if name not in PROFILES:
        raise ValueError(f"COURSE_PROFILE={name!r}: expected one of {PROFILES}")
    return name


def P(quick, full):
    """A value per profile: `n_train = P(quick=2_000, full=60_000)`."""
    return quick if profile() == "quick" else full


def seed_everything(seed: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so a notebook re-runs identically."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)  # also seeds every CUDA device


def versions() -> dict:
    """Versions of the libraries whose behaviour the numbers depend on."""
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "sklearn", "transformers", "tiktoken", "cupy"):
        mod = sys.modules.get(name)
        if mod is None:
            try:
                mod = __import__(name)
            except Exception:
                continue
        out[name] = getattr(mod, "__version__", "?")
    return out


@dataclass
class Run:
    """What one notebook execution measured: checks, metrics, time."""

    module: str
    stem: str
    title: str
    profile: str
    device: str
    seed: int = 0
    started: float = field(default_factory=time.perf_counter)
    passed: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def metric(self, name: str, value) -> float:
        """Record a flat numeric metric for the results file; returns it as a float."""
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"metric {name!r} is not finite: {value}")
        self.metrics[name] = value
        return value

    def record(self, name: str, ok: bool) -> None:
        (self.passed if ok else self.failed).append(name)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def results_path(self) -> Path:
        base = results_dir()
        return (base / "gpu" if self.device.startswith("cuda") else base) / f"{self.stem}.json"

    def summary(self) -> dict:
        return {
            "module": self.module,
            "title": self.title,
            "profile": self.profile,
            "device": self.device,
            "versions": versions(),
            "seconds": round(self.seconds, 1),
            "checks": {"passed": len(self.passed), "failed": len(self.failed),
                       "names": self.passed + self.failed},
            "metrics": dict(sorted(self.metrics.items())),
        }


_current: Run | None = None


def current() -> Run | None:
    """The active run, or None outside a notebook (unit tests)."""
    return _current


def start(module: str, seed: int = 0) -> Run:
    """Begin a notebook: seed, read the profile, pick the device, print one line, start the timer."""
    global _current
    from .device import device_name
    from .plot import set_style

    if module not in MODULES:
        raise KeyError(f"unknown module {module!r}; known: {', '.join(MODULES)}")
    stem, title = MODULES[module]
    seed_everything(seed)
    set_style()
    _current = Run(module=module, stem=stem, title=title, profile=profile(),
                   device=device_name(), seed=seed)
    v = versions()
    libs = " ".join(f"{k} {v[k]}" for k in ("numpy", "torch") if k in v)
    print(f"Module {module} — {title} | profile={_current.profile} | device={_current.device} "
          f"| python {v['python']} {libs} | seed={seed}")
    return _current


def finish() -> dict:
    """End a notebook: write `results/<stem>.json` (or `results/gpu/…` on CUDA) and print a summary."""
    run = _current
    if run is None:
        raise RuntimeError("finish() called before start()")
    data = run.summary()
    path = run.results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"{data['checks']['passed']} checks passed, {data['checks']['failed']} failed "
          f"in {data['seconds']:.1f} s ({run.profile} profile, {run.device}) -> "
          f"{os.path.relpath(path, ROOT)}")
    for name, value in data["metrics"].items():
        print(f"  {name:<40} {value:.6g}")
    if run.failed:
        raise AssertionError(f"failed checks: {run.failed}")
    return data


def gpu_results(stem: str) -> dict | None:
    """The results a GPU run recorded for `stem` (`results/gpu/<stem>.json`), or None."""
    path = RESULTS / "gpu" / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else None
