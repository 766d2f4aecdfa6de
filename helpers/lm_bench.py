"""`make bench` rows for Module 0.7: nanoGPT's published CPU "baby" Shakespeare run, reproduced.

nanoGPT's README (karpathy/nanoGPT, "I only have a macbook"):
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
"...we get a loss of around 1.88 on val". Everything else comes from train_shakespeare_char.py and
train.py's defaults: lr 1e-3 cosine to 1e-4, 100 warmup iters, AdamW betas (0.9, 0.99), weight decay
0.1, grad clip 1.0, no biases.
"""
from __future__ import annotations

import math
import time

import torch

PUBLISHED_VAL_LOSS = 1.88  # nanoGPT README, CPU baby run (eval_iters=20, so about +-0.03 of noise)
BABY_MODEL = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False}
BABY_TRAIN = {"max_iters": 2000, "batch_size": 12, "block_size": 64, "lr": 1e-3, "min_lr": 1e-4,
              "warmup_iters": 100, "weight_decay": 0.1, "betas": (0.9, 0.99), "grad_clip": 1.0, "eval_iters": 20}


def baby_run(iters: int = 2000, seed: int = 0, progress: bool = True) -> dict:
    """Train the baby config for `iters` iterations (lr decay over the same span); losses in nats/char."""
    from .data import load_text
    from .lm import TrainConfig, estimate_loss, evaluate_nll, split, train
    from .models.gpt import GPT, GPTConfig
    from .tokenizers.char import CharTokenizer

    text = load_text("tinyshakespeare")
    tok = CharTokenizer(text)
    train_data, val_data = split(tok.encode(text))
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **BABY_MODEL))
    cfg = TrainConfig(**{**BABY_TRAIN, "max_iters": iters, "lr_decay_iters": iters})
    result = train(model, train_data, val_data, cfg, seed=seed, progress=progress)
    t0 = time.perf_counter()
    val_full = evaluate_nll(model, val_data, BABY_MODEL["block_size"]) / (len(val_data) - 1)
    val_200 = estimate_loss(model, val_data, 64, 12, 200, torch.Generator().manual_seed(seed + 2))
    return {"iters": iters, "train_seconds": result.seconds, "val_loss_eval20": result.evals[-1][2],
            "val_loss_eval200": val_200, "val_loss_full": val_full, "train_loss_eval20": result.evals[-1][1],
            "params": model.num_params(), "eval_seconds": time.perf_counter() - t0,
            "bits_per_char": val_full / math.log(2)}


def run(iters: int = 2000) -> list[dict]:
    """Rows for results/bench.json: validation loss vs the published 1.88, and the wall time."""
    r = baby_run(iters)
    note = (f"nanoGPT CPU baby config (4L/4H/128d, ctx 64, batch 12, {iters} iters, {r['params']:,} params); "
            f"val loss over 20 random batches as nanoGPT reports it: {r['val_loss_eval20']:.3f}; "
            f"over 200 batches: {r['val_loss_eval200']:.3f}")
    return [
        {"module": "0.7", "name": "nanoGPT baby shakespeare_char: val loss (whole val split)",
         "ours": round(r["val_loss_full"], 4), "reference": PUBLISHED_VAL_LOSS if iters == 2000 else None,
         "unit": "nats/char", "note": note},
        {"module": "0.7", "name": "nanoGPT baby shakespeare_char: train time",
         "ours": round(r["train_seconds"], 1), "reference": None, "unit": "s",
         "note": f"{iters} iterations on {torch.get_num_threads()} CPU threads (nanoGPT README: ~3 min on a MacBook)"},
    ]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
