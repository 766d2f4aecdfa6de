"""A small GPT trained on tinyshakespeare characters, once, then cached: the model later modules
(quantization, pruning, GGUF export, serving) compress and serve.

`tiny = load_tiny_gpt()` trains it with the fixed RECIPE below the first time (about 15 s on a
2-core CPU; validation loss 2.02 nats/char) and saves it under `<repo>/cache/` (git-ignored); later
calls load it in well under a second.
`model, encode, decode = load_tiny_gpt()` also works.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..session import ROOT
from .gpt import GPT, GPTConfig

# Change anything here and the cache is retrained (the recipe is stored with the weights).
RECIPE = {
    "dataset": "tinyshakespeare", "split": 0.9, "seed": 0,
    "model": {"block_size": 32, "n_layer": 3, "n_head": 4, "n_embd": 96, "dropout": 0.0, "bias": False},
    "train": {"max_iters": 600, "batch_size": 32, "block_size": 32, "lr": 3e-3, "min_lr": 3e-4,
              "warmup_iters": 30, "weight_decay": 0.1, "betas": (0.9, 0.99), "grad_clip": 1.0},
}
CACHE = ROOT / "cache" / "tiny_gpt_shakespeare_char.pt"


@dataclass
class TinyGPT:
    """The trained model with its character tokenizer and how it was obtained."""

    model: GPT
    tokenizer: "CharTokenizer"  # noqa: F821
    val_loss: float  # nats per character over the whole validation split
    train_seconds: float
    cached: bool  # loaded from the cache (True) or trained by this call
    train_losses: list  # the loss of every training iteration (for convergence plots)

    def __iter__(self):  # model, encode, decode = load_tiny_gpt()
        return iter((self.model, self.encode, self.decode))

    @property
    def bits_per_char(self) -> float:
        return self.val_loss / math.log(2)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def generate(self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
        """Seeded sampling from a text prompt; returns prompt + continuation."""
        from ..lm import generate_text

        return generate_text(self.model, self.encode, self.decode, prompt, max_new_tokens, temperature, top_k, top_p, seed)


def load_tiny_gpt(retrain: bool = False, progress: bool = True, device=None) -> TinyGPT:
    """The cached tiny char-level GPT (trained with RECIPE on first use); model in eval mode on `device` (CPU)."""
    from ..data import load_text
    from ..lm import TrainConfig, evaluate_nll, split, train
    from ..tokenizers.char import CharTokenizer

    text = load_text(RECIPE["dataset"])
    tokenizer = CharTokenizer(text)
    train_data, val_data = split(tokenizer.encode(text), RECIPE["split"])
    blob = None
    if CACHE.exists() and not retrain:
        try:
            blob = torch.load(CACHE, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: retrain
            print(f"ignoring unreadable cache {CACHE} ({type(exc).__name__})")
        if blob is not None and (blob.get("recipe") != _plain(RECIPE) or blob.get("chars") != tokenizer.chars):
            print(f"cache {CACHE.name} was made with another recipe: retraining")
            blob = None
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **RECIPE["model"])
    if blob is None:
        torch.manual_seed(RECIPE["seed"])
        model = GPT(config)
        result = train(model.to(device or "cpu"), train_data, val_data, TrainConfig(**RECIPE["train"]),
                       seed=RECIPE["seed"], progress=progress)
        model = model.cpu().eval()
        val_loss = evaluate_nll(model, val_data, config.block_size) / (len(val_data) - 1)
        blob = {"recipe": _plain(RECIPE), "chars": tokenizer.chars, "state_dict": model.state_dict(),
                "val_loss": val_loss, "train_seconds": result.seconds, "torch": str(torch.__version__),
                "train_losses": result.train_losses}
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(CACHE)
        cached = False
    else:
        model = GPT(config)
        model.load_state_dict(blob["state_dict"])
        model.eval()
        cached = True
    if device is not None:
        model = model.to(device)
    return TinyGPT(model, tokenizer, float(blob["val_loss"]), float(blob["train_seconds"]), cached,
                   list(blob["train_losses"]))


def _plain(obj):
    """The recipe as torch.load(weights_only=True) returns it (tuples become lists)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
