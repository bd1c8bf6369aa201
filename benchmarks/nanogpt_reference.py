"""A stand-alone reference: the training step of nanoGPT's CPU Shakespeare example, in plain PyTorch.

This re-states, in a few dozen lines of our own, what nanoGPT's train.py does on
`--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`:

  * the same model (GPT-2 blocks without biases, fused qkv, SDPA, tied embeddings, GPT-2 init);
  * batches drawn the same way: a fresh np.memmap per batch, random offsets, int64 copies;
  * AdamW without the fused kernel (nanoGPT only fuses on CUDA), weight decay 0.1 on 2-D tensors,
    betas (0.9, 0.99), lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, grad clip 1.0;
  * `loss.item()` every iteration (log_interval=1), an evaluation of 20 batches per split every 250
    iterations, and a checkpoint (torch.save of model and optimizer) whenever val loss improves.

It exists so `shakespeare_cpu.py` can time nanoGPT's recipe and gptkit side by side in one run on the
same machine. It reads gptkit's shards (skipping the 1024-byte header) so both see identical data.

Prints one JSON line: final val loss (nanoGPT's 20-batch estimate and over the whole val split),
median ms/iter (over windows of 10 iterations, as gptkit logs them), wall time, and every evaluation
as [iteration, val loss, seconds since the start, seconds spent in training steps] (speedrun.py reads them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADER_BYTES = 1024


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Layer(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=False)
        self.attn = Attention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, bias=False)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Layer(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for layer in self.h:
            x = layer(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a gptkit data folder (char tokenizer)")
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-interval", type=int, default=250, help="nanoGPT's 250; speedrun.py evaluates more often")
    ap.add_argument("--eval-iters", type=int, default=20)
    args = ap.parse_args()

    meta = json.load(open(os.path.join(args.data, "meta.json")))
    vocab_size = meta["vocab_size"]
    block_size, batch_size, max_iters = 64, 12, args.max_iters
    lr, min_lr, warmup, decay_iters = 1e-3, 1e-4, 100, max_iters
    eval_interval, eval_iters = args.eval_interval, args.eval_iters

    def get_batch(split):
        # nanoGPT re-creates the memmap for every batch (to avoid a memory leak) and copies to int64.
        data = np.memmap(os.path.join(args.data, f"{split}_000000.bin"), dtype=np.uint16, mode="r", offset=HEADER_BYTES)
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y

    def lr_at(it):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay_iters:
            return min_lr
        ratio = (it - warmup) / (decay_iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        out = {}
        for split in ("train", "val"):
            out[split] = sum(model(*get_batch(split)).item() for _ in range(eval_iters)) / eval_iters
        model.train()
        return out

    torch.manual_seed(args.seed)
    model = ReferenceGPT(vocab_size, block_size, n_layer=4, n_head=4, n_embd=128)
    params = [p for p in model.parameters()]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))
    ckpt_dir = tempfile.mkdtemp(prefix="nanogpt-ref-")
    best_val, step_times, losses, evals = 1e9, [], {}, []
    started = time.perf_counter()
    x, y = get_batch("train")
    for it in range(max_iters + 1):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(it)
        if it % eval_interval == 0 or it == max_iters:
            losses = estimate_loss()
            # (iteration, val loss, seconds since the start including evaluations, seconds of training steps only)
            evals.append([it, losses["val"], time.perf_counter() - started, sum(step_times)])
            if losses["val"] < best_val and it > 0:
                best_val = losses["val"]
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, os.path.join(ckpt_dir, "ckpt.pt"))
        if it == max_iters:
            break
        t0 = time.perf_counter()
        loss = model(x, y)
        x, y = get_batch("train")  # prefetch the next batch, as nanoGPT does
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # log_interval=1: nanoGPT reads the loss every iteration
        step_times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    windows = [sum(step_times[i : i + 10]) / 10 for i in range(0, len(step_times) - 9, 10)]
    # The whole val split in consecutive windows: the same measure as `gptkit eval`.
    model.eval()
    val = np.memmap(os.path.join(args.data, "val_000000.bin"), dtype=np.uint16, mode="r", offset=HEADER_BYTES)
    starts = list(range(0, len(val) - block_size, block_size))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(starts), 16):
            w = torch.from_numpy(np.stack([val[s : s + block_size + 1].astype(np.int64) for s in starts[i : i + 16]]))
            total += model(w[:, :-1], w[:, 1:]).item() * w[:, 1:].numel()
            count += w[:, 1:].numel()
    print(
        json.dumps(
            {
                "name": "nanogpt-reference",
                "val_loss": losses["val"],
                "train_loss": losses["train"],
                "ms_per_iter": 1000 * float(np.median(windows)),
                "full_val_loss": total / count,
                "wall_s": wall,
                "evals": evals,
            }
        )
    )


if __name__ == "__main__":
    main()
