"""PyTorch → ONNX → ONNX Runtime, and INT8 dynamic quantization: the deployment path of Module 1.4, step by step.

ONNX (https://onnx.ai/onnx/intro/concepts.html) stores a model as a *graph of standard operators* (MatMul, Add,
Softmax, …, each defined by the spec at an *opset* version) plus *initializers*, the weight tensors, in one protobuf
file. Any runtime that implements the opset — ONNX Runtime, TensorRT, OpenVINO, a browser — runs it without Python
or PyTorch. The libraries do the work here; this file only shows the steps:

1. `export`: `torch.onnx.export` runs the model once on an example input and records the operators it calls. Shapes
   are recorded too: every axis not named in `dynamic_axes` becomes a constant of the graph (the classic pitfall).
2. `session` / `OrtLM`: an ONNX Runtime `InferenceSession` on the CPU; `OrtLM` answers `lm(ids).logits` like a
   transformers model, so `helpers.quant.evaluate.perplexity` scores it unchanged.
3. `quantize_int8`: `onnxruntime.quantization.quantize_dynamic` rewrites MatMul → MatMulInteger with INT8 weights
   (a scale per tensor, or per output channel) and quantizes the activations on the fly, per tensor, to UINT8.
4. `node_names`, `op_histogram`, `initializers`, `fusible_pairs`, `io_signature`: read what a file holds.

Which exporter. torch 2.13 has two, measured one after the other on SmolLM2-135M on the course's shared 2-core CPU
(onnxscript 0.7): the default `dynamo=True` path (torch.export → decompositions → onnxscript translation → graph
optimizer) took 260 s, 112 s with `optimize=False`; the legacy TorchScript tracer (`dynamo=False`) took 44 s (13 s on
a quieter machine). Both agree with PyTorch to ~1e-4 on logits of magnitude ~30. The tracer fails on transformers'
packed-sequence check (`aten::diff` has no ONNX translation) unless an attention mask is passed, which `LogitsOnly`
does. So `export` uses the tracer and keeps `dynamo=True` one flag away: the tracer is 2.5–6x faster here, but it
silently bakes Python control flow on tensor values into the graph, where torch.export stops with an error
(notebook 1-04, Exercise 5).
"""
from __future__ import annotations

import collections
import os
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.gpt import GPT

OPSET = 18  # ONNX opset: the version of the operator spec the graph is written against
SEQ_AXES = {0: "batch", 1: "seq"}  # (B, T): the two axes that change from call to call


class LogitsOnly(nn.Module):
    """`input_ids (B, T) -> logits (B, T, V)` and nothing else: the one signature the ONNX graph gets.

    The course GPT returns (logits, loss); a transformers model returns an output object with a KV cache. Graphs
    take and return flat lists of tensors, so we keep the logits and switch the cache off (use_cache=False)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, GPT):
            return self.model(input_ids)[0]
        # an all-ones mask: without one, transformers looks for packed sequences with aten::diff (no ONNX symbolic)
        mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


def export(model: nn.Module, example, path, input_names=("input_ids",), output_names=("logits",),
           dynamic_axes: dict | None = None, dynamic: bool = True, opset: int = OPSET, dynamo: bool = False) -> Path:
    """Write `model` traced on `example` (a tensor or a tuple of them) to the ONNX file `path`; return the path.

    dynamic_axes: {name: {axis: label}} for the axes that may change; default (B, T) on every input and output.
    dynamic=False exports every shape as the constant it had in `example`. dynamo=True uses torch.export instead
    (then give dynamic axes a size >= 2 in `example`: torch.export specializes sizes 0 and 1)."""
    example = example if isinstance(example, tuple) else (example,)
    if len(example) != len(input_names):
        raise ValueError(f"{len(example)} example inputs but {len(input_names)} input names {input_names}")
    if dynamic and dynamic_axes is None:
        dynamic_axes = {name: SEQ_AXES for name in (*input_names, *output_names)}
    if not dynamic:
        dynamic_axes = None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings ("might not generalize") and the legacy-exporter notice
        if dynamo:
            shapes = {n: {ax: torch.export.Dim.DYNAMIC for ax in (dynamic_axes or {}).get(n, {})} for n in input_names}
            torch.onnx.export(model, example, str(path), dynamo=True, input_names=list(input_names),
                              output_names=list(output_names), dynamic_shapes=shapes if dynamic else None,
                              opset_version=opset, external_data=False, verbose=False)
        else:
            torch.onnx.export(model, example, str(path), dynamo=False, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=opset)
    return path


def session(path, threads: int | None = None):
    """An ONNX Runtime session on the CPU with `threads` intra-op threads (default: as many as torch uses)."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no ONNX file there — write one with export() first")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # fatal only: errors reach the caller as exceptions
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtLM:
    """An ONNX Runtime session that answers like a transformers causal LM: `lm(ids).logits`, a torch tensor."""

    def __init__(self, path, threads: int | None = None):
        self.path = Path(path)
        self.session = session(path, threads)

    def __call__(self, input_ids: torch.Tensor):
        ids = input_ids.detach().cpu().numpy().astype(np.int64)  # (B, T)
        logits = self.session.run(["logits"], {"input_ids": ids})[0]  # (B, T, V) numpy
        return types.SimpleNamespace(logits=torch.from_numpy(logits))


def quantize_int8(src, dst, per_channel: bool = False, op_types=("MatMul",), exclude=()) -> Path:
    """INT8 dynamic quantization of `src` into `dst` with onnxruntime: weights of the `op_types` nodes (except the
    nodes named in `exclude`) stored as int8, symmetric, one scale per tensor (or per output channel); activations
    quantized to uint8 per tensor at run time."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not Path(src).is_file():
        raise FileNotFoundError(f"{src}: no ONNX file to quantize")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=list(op_types), nodes_to_exclude=list(exclude))
    return Path(dst)


def file_mb(path) -> float:
    """Size of a file in MB (10^6 bytes)."""
    return os.path.getsize(path) / 1e6


# --------------------------------------------------------------------------------------------------
# What a file holds
# --------------------------------------------------------------------------------------------------

def _graph(path_or_model):
    import onnx

    return (onnx.load(str(path_or_model)) if isinstance(path_or_model, (str, Path)) else path_or_model).graph


def node_names(path_or_model, op_type: str, contains: str = "") -> list[str]:
    """Names of the graph's `op_type` nodes whose name contains `contains` (e.g. "MatMul", "down_proj")."""
    return [n.name for n in _graph(path_or_model).node if n.op_type == op_type and contains in n.name]


def op_histogram(path_or_model) -> collections.Counter:
    """How many nodes of each operator type the graph has."""
    return collections.Counter(node.op_type for node in _graph(path_or_model).node)


def initializers(path_or_model) -> dict[str, np.ndarray]:
    """The graph's stored tensors (weights and constants) by name, as numpy arrays."""
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in _graph(path_or_model).initializer}


def fusible_pairs(path_or_model, pairs=(("MatMul", "Add"), ("MatMul", "Mul"), ("Mul", "Sigmoid"),
                                        ("Sigmoid", "Mul"), ("Softmax", "MatMul"))) -> collections.Counter:
    """Producer → consumer edges of the given op-type pairs where the producer's output feeds only that consumer:
    the places a compiler (TensorRT, ORT's optimizer) can merge two kernels into one, saving a round trip to memory."""
    g = _graph(path_or_model)
    consumers = collections.defaultdict(list)  # tensor name -> nodes that read it
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    wanted = set(pairs)
    found = collections.Counter()
    for node in g.node:
        for out in node.output:
            readers = consumers[out]
            if len(readers) == 1 and (node.op_type, readers[0].op_type) in wanted:
                found[f"{node.op_type}+{readers[0].op_type}"] += 1
    return found


def io_signature(sess) -> list[str]:
    """One line per graph input and output of an ONNX Runtime session: name, element type, shape (labels = dynamic)."""
    return ([f"in  {a.name}: {a.type} {a.shape}" for a in sess.get_inputs()]
            + [f"out {a.name}: {a.type} {a.shape}" for a in sess.get_outputs()])
