"""Generation speed: gptkit's engine against no cache, transformers and nanoGPT's loop, in one run.

    python benchmarks/generate.py                 # both models, batch 1 and 8, 500 new tokens (124M: 100)
    python benchmarks/generate.py --quick         # a few tokens each: does everything still run?
    python benchmarks/generate.py --quantize --ckpt out/ckpt.safetensors --data data/shakespeare

For each model shape and batch size (1 and 8), greedy decoding of the same prompt by:

    gptkit engine        engine.Engine: prefill once, preallocated KV cache, one host sync per step, and
                         on the CPU (cpu_decode.py) weights laid out (in, out) in memory, a large model's
                         decode products split over all cores, oneDNN off in float32
    engine on one core   the same engine with each product on one core (split_matmuls=False): what the
                         split is worth (nothing on the small model: its matrices are too small to split)
    engine nn.Linear layout  the same engine on nn.Linear's own (out, in) layout (cpu_layout=False, which
                         also means no split): what the layout and the split together are worth
    gptkit no cache      the whole sequence through GPT.forward for every new token (no KV cache)
    transformers         GPT2LMHeadModel.generate with its KV cache, on the SAME weights: the gptkit
                         model is GPT-2-shaped (learned positions, LayerNorm, GELU) and its weights are
                         copied across with gptkit.export.hf's mapping, so both compute the same function
    nanoGPT loop         nanoGPT's sample loop restated: crop to block_size, full forward, temperature,
                         top-k 200, softmax, multinomial, torch.cat (sampling, so it does a little more)

Tokens/s = batch x new tokens / wall time (prefill included, model loading not). Each method runs once
first on a few tokens as a warm-up. Ratios are to transformers at the same batch; "batch-8 total vs
transformers batch 1" is the continuous-batching goal (>= 5x on the small model).

Models: "small" is the shape of the CPU presets (4 layers, 4 heads, 128 wide, 65 characters) with a
1024-token context instead of 64 so that all methods generate 500 tokens inside it (transformers cannot
go past its n_positions); "124m" is GPT-2 small's shape (12 layers, 12 heads, 768 wide, 50257 tokens).
Random weights: speed does not depend on what was learned. --quantize adds gptkit's int8 CPU engine
(quantize.py) with its speed-up, and with --ckpt/--data the validation-loss change it causes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from types import SimpleNamespace

import torch

from gptkit.engine import Engine
from gptkit.model import GPT, ModelConfig
from gptkit.sampling import SamplingParams

SHAPES = {
    "small": dict(vocab_size=65, block_size=1024, n_layer=4, n_head=4, n_embd=128),
    "124m": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}
PROMPT_TOKENS = 16


def gpt2_shaped(shape: str) -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(**SHAPES[shape], position="learned", norm="layernorm", mlp="gelu", bias=True, dropout=0.0, vocab_multiple=1)
    return GPT(config).eval()


def to_transformers(model: GPT):
    """The same weights in transformers' GPT2LMHeadModel (gptkit.export.hf's config and tensor mapping)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptkit.export.hf import hf_config, hf_state_dict
    from gptkit.export.source import ExportSource

    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    source = SimpleNamespace(config=model.config, architecture="gpt2", tokenizer=SimpleNamespace(eot_id=0), tensors=tensors)
    source.tied = "lm_head.weight" not in tensors
    source.ffn_hidden = ExportSource.ffn_hidden.fget(source)
    config = {k: v for k, v in hf_config(source, "float32").items() if k not in ("architectures", "model_type", "dtype", "torch_dtype")}
    hf = GPT2LMHeadModel(GPT2Config(**config)).eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict(source), strict=False)
    assert not unexpected and all(".attn.bias" in k or "masked_bias" in k or k == "lm_head.weight" for k in missing), (missing, unexpected)
    return hf


class Tokens:
    """The engine needs a tokenizer only to turn ids into text; these benchmarks never read it."""

    eot_id = None

    def decode(self, ids):
        return "x" * len(ids)


def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_engine(model, prompts, n, **engine_options):
    engine = Engine(model, Tokens(), max_batch_size=len(prompts), **engine_options)
    params = SamplingParams(max_new_tokens=n, temperature=0.0, stop_at_eot=False)
    out = engine.generate(prompts, params)
    assert all(len(c.token_ids) == n for c in out)


@torch.inference_mode()
def run_no_cache(model, prompts, n):
    idx = torch.tensor(prompts)
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)


@torch.inference_mode()
def run_nanogpt(model, prompts, n, temperature=1.0, top_k=200):
    """nanoGPT's GPT.generate, restated: crop, forward, scale, top-k, softmax, multinomial, cat."""
    idx = torch.tensor(prompts)
    for _ in range(n):
        idx_cond = idx if idx.size(1) <= model.config.block_size else idx[:, -model.config.block_size :]
        logits, _ = model(idx_cond)
        logits = logits[:, -1, :] / temperature
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
        probs = torch.softmax(logits, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)


@torch.inference_mode()
def run_transformers(hf, prompts, n):
    idx = torch.tensor(prompts)
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    assert out.shape[1] == idx.shape[1] + n


def measure(methods: dict, prompts, n: int, warmup: int, repeat: int = 1) -> dict[str, float]:
    """tokens/s of each method: the median of `repeat` timed runs, the methods interleaved so that a busy
    spell hits them alike."""
    for fn in methods.values():
        fn(prompts, min(warmup, n))  # warm-up: first-call allocations, kernel choices
    rates = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            rates[name].append(len(prompts) * n / time_it(lambda: fn(prompts, n)))
    return {name: statistics.median(r) for name, r in rates.items()}


def val_loss(model, data, batches: int) -> float:
    from gptkit.shards import Split

    split = Split.open(data, "val")
    total, count = 0.0, 0
    with torch.inference_mode():
        for x, y in split.iter_windows(model.config.block_size, 8, batches):
            _, loss = model(x, y)
            total, count = total + loss.item() * y.numel(), count + y.numel()
    return total / count


def quantized_section(args, report: dict) -> None:
    from gptkit.quantize import quantize_model

    print("\n## int8 dynamic quantization (CPU), gptkit engine, batch 1")
    for shape in args.models:
        model = gpt2_shaped(shape)
        n = args.new_tokens or (500 if shape == "small" else 100)
        n = min(n, 20) if args.quick else n
        prompts = [list(range(PROMPT_TOKENS))]
        methods = {"float32": lambda p, k: run_engine(model, p, k), "int8": lambda p, k: run_engine(quantize_model(model, "int8"), p, k)}
        rates = measure(methods, prompts, n, args.warmup, args.repeat)
        speedup = rates["int8"] / rates["float32"]
        print(f"{shape:>6}  float32 {rates['float32']:8.1f} tok/s   int8 {rates['int8']:8.1f} tok/s   speed-up {speedup:.2f}x")
        report.setdefault("int8", {})[shape] = {**rates, "speedup": speedup}
    if args.ckpt and args.data:
        from gptkit.inference import load_model

        loaded = load_model(args.ckpt, "cpu", "float32")
        full = val_loss(loaded.model, args.data, args.val_batches)
        low = val_loss(quantize_model(loaded.model, "int8"), args.data, args.val_batches)
        print(f"{args.ckpt}: val loss float32 {full:.4f}, int8 {low:.4f} (change {low - full:+.4f}, {args.val_batches} batches)")
        report.setdefault("int8", {})["val_loss"] = {"float32": full, "int8": low, "change": low - full}
    else:
        print("(the validation-loss change needs a trained model: --ckpt CKPT --data DATA)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,124m", help="comma-separated: small, 124m")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 500 (small), 100 (124m)")
    parser.add_argument("--quick", action="store_true", help="a few tokens per method: a smoke run")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per method; the median counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip", default="", help='comma-separated methods to leave out, e.g. "gptkit no cache,nanoGPT loop"')
    parser.add_argument("--quantize", action="store_true", help="also time the int8 engine (CPU)")
    parser.add_argument("--ckpt", default=None, help="with --quantize: a trained checkpoint for the val-loss change")
    parser.add_argument("--data", default=None, help="with --ckpt: its data folder")
    parser.add_argument("--val-batches", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    report: dict = {"threads": torch.get_num_threads(), "results": {}}
    print(f"# generation benchmark: greedy, prompt {PROMPT_TOKENS} tokens, {torch.get_num_threads()} torch threads, median of {args.repeat}\n")
    print("| model | batch | new tokens | method | tokens/s | vs transformers |")
    print("|---|---|---|---|---|---|")
    for shape in args.models:
        model = gpt2_shaped(shape)
        hf = to_transformers(model)
        plain = copy.deepcopy(model)  # nn.Linear's layout: the engine lays `model` out in place
        n = args.new_tokens or (500 if shape == "small" else 100)
        n = min(n, 12 if shape == "small" else 4) if args.quick else n
        methods = {
            "gptkit engine": lambda p, k: run_engine(model, p, k),
            "engine on one core": lambda p, k: run_engine(model, p, k, split_matmuls=False),
            "engine nn.Linear layout": lambda p, k: run_engine(plain, p, k, cpu_layout=False),
            "gptkit no cache": lambda p, k: run_no_cache(plain, p, k),
            "transformers": lambda p, k: run_transformers(hf, p, k),
            "nanoGPT loop": lambda p, k: run_nanogpt(plain, p, k),
        }
        methods = {k: v for k, v in methods.items() if k not in skip}
        per_batch = {}
        for batch in [int(b) for b in args.batches.split(",")]:
            prompts = [[(7 * i + 3 * row) % SHAPES[shape]["vocab_size"] for i in range(PROMPT_TOKENS)] for row in range(batch)]
            rates = measure(methods, prompts, n, min(args.warmup, n), args.repeat)
            per_batch[batch] = rates
            for name, rate in rates.items():
                ratio = rate / rates["transformers"] if "transformers" in rates else math.nan
                print(f"| {shape} | {batch} | {n} | {name} | {rate:.1f} | {ratio:.2f}x |")
        report["results"][shape] = {"new_tokens": n, **{str(b): r for b, r in per_batch.items()}}
        if 1 in per_batch and 8 in per_batch and "transformers" in per_batch[1] and "gptkit engine" in per_batch[8]:
            goal = per_batch[8]["gptkit engine"] / per_batch[1]["transformers"]
            print(f"| {shape} | 8 vs 1 | {n} | engine batch-8 total vs transformers batch 1 | | {goal:.2f}x |")
            report["results"][shape]["engine_b8_vs_transformers_b1"] = goal
    if args.quantize:
        quantized_section(args, report)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
