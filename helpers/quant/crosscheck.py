"""Cross-checking our from-scratch GPTQ / AWQ / SmoothQuant against the library practitioners use: llm-compressor
(vLLM project; `oneshot` + a recipe of modifiers, checkpoints in the compressed-tensors format vLLM serves).

Same model, same calibration windows (`evaluate.calibration_windows`, handed over as a `datasets.Dataset` of
input_ids so llm-compressor tokenizes nothing), same grids as ours:
  - GPTQ (Frantar et al. 2023) → `GPTQModifier`: int4 asymmetric min-max grid (scale + zero point) per group of 64
    input columns (or per output channel), columns left to right (actorder=None; "static" = our act_order),
    dampening 0.01 · mean diag(H) by default (`dampening_frac`),
    block 128. llm-compressor fixes every group's grid from the original weight before the column loop: that is
    our `gptq_quantize(..., static_groups=True)`, and the two agree exactly (tests/test_crosscheck.py);
  - AWQ (Lin et al. 2024) → `AWQModifier`, a transform: per-input-channel scales s = mean|x|^α, α on a 20-point
    grid, duo_scaling=False (activation-only, as the paper and `awq.search_scale`), folded into the previous op;
    then `QuantizationModifier` with the same int4 asymmetric group-64 grid, round to nearest;
  - SmoothQuant (Xiao et al. 2023) → `SmoothQuantModifier(smoothing_strength=0.5)`, then `GPTQModifier` or
    `QuantizationModifier` with the preset scheme "W8A8": int8 symmetric per-output-channel weights, int8 symmetric
    dynamic per-token activations — the settings of `smoothquant.quantize_model_w8a8` (weight="channel", act="token").
After `oneshot` the model keeps float weights (GPTQ has already replaced them by their dequantized values) plus
scales / zero points, and fake-quantizes (quantize → dequantize) weights and activations in every forward, so
`evaluate.perplexity` scores it as is.

The other GPTQ library, AutoGPTQ, is archived; `autogptq_status()` says why it is not used here.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from .. import llm

METHODS = ("gptq", "awq", "smoothquant-gptq", "smoothquant-rtn", "rtn")


def calibration_dataset(calib: torch.Tensor):
    """Our calibration windows (n, T) as the `datasets.Dataset` llm-compressor takes: one row of input_ids each."""
    from datasets import Dataset

    if calib.dim() != 2 or calib.dtype != torch.long:
        raise ValueError(f"calib must be token ids (n, T) of dtype long; got {tuple(calib.shape)} {calib.dtype}")
    return Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})


def weight_scheme(bits: int, group_size: int | None, symmetric: bool = False) -> dict:
    """A compressed-tensors config group: int `bits` weights on Linear layers, min-max grid per output channel
    (group_size=None) or per group of `group_size` input columns; activations left float (WxA16)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8; got {bits}")
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, dynamic=False,
                            strategy="group" if group_size else "channel", group_size=group_size)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=args)}


def recipe(method: str, bits: int = 4, group_size: int | None = 64, symmetric: bool = False,
           smoothing_strength: float = 0.5, n_grid: int = 20, duo_scaling: bool = False, actorder: str | None = None,
           dampening_frac: float = 0.01) -> list:
    """The llm-compressor modifiers for `method` (see the module docstring); the LM head is never quantized.

    AWQ: `n_grid` exponents α = 0, 1/n_grid, …; duo_scaling=False takes scales from activations only,
    s = mean|x|^α, as the paper and our `awq.search_scale` (llm-compressor's default True also divides by
    mean|w|^(1-α))."""
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    ignore = ["lm_head"]
    weights = weight_scheme(bits, group_size, symmetric) if not method.startswith("smoothquant") else None
    if method == "gptq":
        return [GPTQModifier(config_groups=weights, ignore=ignore, actorder=actorder, dampening_frac=dampening_frac,
                             block_size=128)]
    if method == "awq":
        return [AWQModifier(n_grid=n_grid, duo_scaling=duo_scaling),
                QuantizationModifier(config_groups=weights, ignore=ignore)]
    if method == "rtn":
        return [QuantizationModifier(config_groups=weights, ignore=ignore)]
    if method == "smoothquant-gptq":
        return [SmoothQuantModifier(smoothing_strength=smoothing_strength),
                GPTQModifier(scheme="W8A8", targets=["Linear"], ignore=ignore, actorder=None)]
    if method == "smoothquant-rtn":
        return [SmoothQuantModifier(smoothing_strength=smoothing_strength),
                QuantizationModifier(scheme="W8A8", targets=["Linear"], ignore=ignore)]
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


@contextlib.contextmanager
def _no_pin_memory():
    """AWQ pins its cached activations for faster host→GPU copies; `pin_memory()` needs an accelerator and raises
    on a CPU-only torch. Pinning changes no value, so on CPU we skip it — the only change to the library."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    with mock.patch.object(IntermediatesCache, "pin_memory", lambda self, *args, **kwargs: None):
        yield


@dataclass
class OneshotResult:
    model: object  # the fake-quantized model, ready for evaluate.perplexity
    method: str
    seconds: float  # oneshot only (calibration + quantization), not loading or saving; wall clock
    cpu_seconds: float  # this process's CPU time for the same: with 1 thread, the wall time on an idle machine
    checkpoint_mb: float | None = None  # compressed-tensors checkpoint on disk (save=True), MB
    recipe: str = ""


def dir_mb(path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def llmcompressor_oneshot(method: str, bits: int = 4, group_size: int | None = 64, calib: torch.Tensor | None = None,
                          model=None, tokenizer=None, symmetric: bool = False, save: bool = False,
                          verbose: bool = False, **recipe_kwargs) -> OneshotResult:
    """Run llm-compressor's `oneshot(method)` on `model` (default: a fresh copy of the course LLM) calibrated on
    `calib` (n, T) — pass `evaluate.calibration_windows(tok, n, T)` so ours and theirs see the same tokens.

    recipe_kwargs go to `recipe` (smoothing_strength, n_grid, duo_scaling; actorder, dampening_frac for GPTQ).
    save=True also writes the compressed checkpoint (packed int4 / int8 + scales) into a temporary folder, records
    its size and deletes it. tokenizer: only needed because `oneshot` insists on a processor when given a dataset
    (ours is already tokenized); default the course LLM's. SmoothQuant methods ignore bits/group_size: they use
    the W8A8 preset."""
    from llmcompressor import oneshot
    from loguru import logger

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if calib is None:
        raise ValueError("calib is required: pass evaluate.calibration_windows(tok, n, seqlen) (n, T) token ids")
    if model is None:
        model, tokenizer = llm.load()
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(llm.cache_dir())
    mods = recipe(method, bits, group_size, symmetric, **recipe_kwargs)
    ds = calibration_dataset(calib)
    if not verbose:  # its per-module INFO / METRIC / "no accelerator" lines (loguru), torch.fx's tracing notice
        for name in ("llmcompressor", "compressed_tensors"):
            logger.disable(name)
        logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        # its progress bars (two per layer, and saving's) go to stderr: kept only when verbose
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO())
        # oneshot reconfigures its loguru logger on entry (printing to stdout) unless this variable says no
        no_log = mock.patch.dict(os.environ, {} if verbose else {"LLM_COMPRESSOR_LOG_DISABLED": "true"})
        with _no_pin_memory(), tempfile.TemporaryDirectory(prefix="oneshot-") as scratch, quiet, no_log:
            oneshot(model=model, tokenizer=tokenizer, dataset=ds, recipe=mods, num_calibration_samples=len(calib),
                    max_seq_length=calib.shape[1], batch_size=min(8, len(calib)),
                    shuffle_calibration_samples=False, pipeline="sequential", output_dir=None,
                    log_dir=os.path.join(scratch, "logs"))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        result = OneshotResult(model.eval(), method, seconds, cpu_seconds, recipe="\n".join(repr(m) for m in mods))
    finally:
        for name in ("llmcompressor", "compressed_tensors"):
            logger.enable(name)
    if save:
        result.checkpoint_mb = checkpoint_mb(model, verbose)
    return result


def checkpoint_mb(model, verbose: bool = False) -> float:
    """Size on disk of `model` (after `oneshot`) saved in the compressed-tensors format, via a throwaway folder.
    Saving compresses the model in place; it decompresses itself, with a progress bar, on its next forward: score it
    before measuring its size."""
    from loguru import logger

    tmp = tempfile.mkdtemp(prefix="llmcompressor-ckpt-")
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO())
    try:
        if not verbose:  # `oneshot` re-enabled its loggers ("no accelerator", "re-tied embeddings", ...)
            for name in ("llmcompressor", "compressed_tensors"):
                logger.disable(name)
        with quiet, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "saving a model with offloaded modules": none are
            model.save_pretrained(tmp, save_compressed=True)
        return dir_mb(tmp)
    finally:
        for name in ("llmcompressor", "compressed_tensors"):
            logger.enable(name)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# AutoGPTQ: why not
# --------------------------------------------------------------------------------------------------

def autogptq_status(download: bool = False, timeout: float = 120) -> str:
    """Can AutoGPTQ be used here? Tries the import; with download=True also fetches the wheel with
    `pip download --no-deps auto-gptq` into a temporary folder (nothing is installed; needs the package index) and
    reads its declared requirements and the CUDA libraries its compiled kernels link against — without, says what
    that inspection found (auto-gptq 0.7.1). One paragraph for a notebook cell."""
    try:
        import auto_gptq  # noqa: F401

        return f"auto_gptq {auto_gptq.__version__} is importable."
    except ImportError as e:
        lines = [f"`import auto_gptq` → {type(e).__name__}: {e}."]
    if not download:
        lines.append("Its last wheel (0.7.1, `pip download --no-deps auto-gptq`; `autogptq_status(download=True)` "
                     "re-inspects it) installs, but all 5 of its compiled GPTQ kernels link libcudart.so.12, "
                     "libc10_cuda.so and libtorch_cuda.so, which a CPU-only torch does not ship: they cannot load here.")
        lines.append(_SUCCESSOR)
        return "\n".join(lines)
    tmp = tempfile.mkdtemp(prefix="autogptq-")
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, "auto-gptq"],
                             capture_output=True, text=True, timeout=timeout)
        files = sorted(Path(tmp).iterdir())
        if out.returncode != 0 or not files:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            lines.append(f"`pip download --no-deps auto-gptq` failed: {tail[0]}")
        for f in files:
            lines.append(f"`pip download --no-deps auto-gptq` → {f.name}: " + _inspect_wheel(f))
    except (subprocess.TimeoutExpired, OSError) as e:
        lines.append(f"`pip download` did not finish: {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines.append(_SUCCESSOR)
    return "\n".join(lines)


_SUCCESSOR = ("AutoGPTQ's repository is archived (its README points to GPTQModel); GPTQModel 7.7 requires "
              "torch ≥ 2.14.1, so installing it would replace our CPU torch 2.13 with a multi-GB CUDA build. "
              "We cross-check GPTQ with llm-compressor instead: maintained by the vLLM project, runs on CPU, "
              "and writes the compressed-tensors checkpoints vLLM serves.")


def _inspect_wheel(path: Path) -> str:
    """A wheel's version, torch requirement, and the CUDA libraries its compiled extensions need."""
    import re
    import zipfile

    if path.suffix != ".whl":
        return "a source distribution: installing it compiles CUDA kernels, which needs nvcc and a CUDA torch."
    with zipfile.ZipFile(path) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        version = re.search(r"^Version: (.+)$", meta, re.M).group(1)
        torch_req = re.findall(r"^Requires-Dist: (torch\b[^;\n]*)$", meta, re.M)
        libs, exts = set(), []
        for name in z.namelist():
            if name.endswith(".so"):
                exts.append(name.split("/")[-1].split(".")[0])
                found = re.findall(rb"lib(?:cudart|c10_cuda|torch_cuda)\.so[.\d]*", z.read(name))
                libs |= {m.decode() for m in found}
    return (f"version {version}, requires {', '.join(torch_req) or 'no torch'}; its {len(exts)} compiled kernels "
            f"({', '.join(sorted(exts))}) link {', '.join(sorted(libs)) or 'no CUDA library'}, which a CPU-only "
            f"torch does not ship: pip would accept the wheel, but its GPTQ kernels cannot load here (not tried: "
            f"nothing is installed into .venv).")
