"""Model compression beyond quantization (Module 1.3): fewer weights, smaller students, low-rank updates.

Import the module you need, e.g. `from helpers.compress.prune import magnitude_masks`; this file imports
nothing, so that the modules can use each other without import cycles.

    prune.py    magnitude pruning from scratch: unstructured masks (global / per layer, bit-equal with
                torch.nn.utils.prune), structured pruning that makes matrices physically smaller (MLP neurons,
                conv channels, attention heads), one-shot vs iterative schedules (Han et al. 2015; Zhu & Gupta
                2017), the lottery-ticket rewind (Frankle & Carbin 2019)
    distill.py  knowledge distillation: the temperature-scaled KD loss (Hinton et al. 2015)
    lora.py     LoRA from scratch: W = W0 + (alpha / r) B A, trainable adapters, merge (Hu et al. 2021)
    pipeline.py the capstone's sequence-classification loop on SST-2: fine-tune (with masks or a teacher's
                logits), evaluate, time, and a DistilBERT-style student built from alternate teacher layers
"""
