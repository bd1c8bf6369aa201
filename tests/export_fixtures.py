"""Tiny models for the export tests: 2 layers, 32 wide, random weights spread wide enough that the
logits of different tokens are far apart (greedy decoding then never hinges on rounding).

    GPT2_FAMILY / LLAMA_FAMILY   component choices of the two architectures that export
    make_checkpoint(path, tokenizer, **model)   a real gptkit checkpoint file of such a model
"""

from __future__ import annotations

from pathlib import Path

import torch

GPT2_FAMILY = dict(position="learned", norm="layernorm", mlp="gelu")
LLAMA_FAMILY = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False)
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=128, dropout=0.0)
# The cases each format covers: both families, biases on and off, tied and untied, padded vocabulary.
CASES = {
    "gpt2-bias-tied": dict(GPT2_FAMILY, bias=True, tie_embeddings=True),
    "gpt2-nobias-untied-padded": dict(GPT2_FAMILY, bias=False, tie_embeddings=False, vocab_multiple=64),
    "llama-tied-padded": dict(LLAMA_FAMILY, tie_embeddings=True, vocab_multiple=64),
    "llama-untied": dict(LLAMA_FAMILY, tie_embeddings=False),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights ~ N(0, 0.3), norm gains ~ 1 + N(0, 0.2), biases ~ N(0, 0.1): every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.3 * noise)


def make_checkpoint(path: Path, tokenizer, seed: int = 0, **model_options) -> Path:
    from gptkit.checkpoint import save_checkpoint
    from gptkit.model import GPT, ModelConfig

    config = ModelConfig(vocab_size=tokenizer.vocab_size, **{**TINY, **model_options})
    model = GPT(config)
    randomize(model, seed)
    train_config = {"data": "data/tiny", "optimizer": "adamw", "learning_rate": 1e-3, "batch_size": 8, "grad_accum": 1}
    save_checkpoint(path, model, tokenizer.spec(), step=10, train_loss=2.6, val_loss=2.5, train_config=train_config)
    return path


def gptkit_greedy(ckpt: Path, prompt_ids: list[int], n: int) -> list[int]:
    """`gptkit sample --temperature 0`'s tokens (the library call behind it), stop token ignored."""
    from gptkit.generate import generate
    from gptkit.inference import load_model

    model = load_model(ckpt, device="cpu", dtype="float32").model
    return list(generate(model, prompt_ids, n, temperature=0.0, top_k=None))
