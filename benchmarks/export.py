"""Decoding speed of an exported model: gptkit vs onnxruntime, with and without the KV cache, batch 1.

    python benchmarks/export.py                       # a random Llama-family model of the CPU preset's size
    python benchmarks/export.py --family gpt2         # the GPT-2 family at the same size
    python benchmarks/export.py --ckpt out/ckpt.safetensors

Each runtime decodes --tokens tokens greedily after a short prompt, on one thread (the machine's other
cores stay out of it, so the figures compare the runtimes, not the thread pools). One warm-up run, then the
best of --repeats. The decoders must produce the same tokens; the script says so. With llama-cpp-python
installed, the GGUF export is timed too.

Before the speed table, a parity table: the largest |logit difference| from gptkit over one window of
block_size tokens, for each runtime that loads an export (transformers, onnxruntime, llama.cpp).
docs/export.md quotes both tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

FAMILIES = {
    "llama": dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False),
    "gpt2": dict(position="learned", norm="layernorm", mlp="gelu", bias=True),
}


def random_checkpoint(folder: Path, family: str, n_layer: int, n_embd: int, n_head: int, block_size: int) -> Path:
    """A model of the given size with random weights and a small byte-level BPE (so GGUF takes it too)."""
    from gptkit.checkpoint import save_checkpoint
    from gptkit.model import GPT, ModelConfig
    from gptkit.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train(__doc__ * 20, 320, pattern="gpt2")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                         block_size=block_size, **FAMILIES[family])
    torch.manual_seed(0)
    model = GPT(config)
    path = folder / "ckpt.safetensors"
    save_checkpoint(path, model, tokenizer.spec(), step=0)
    return path


def float32_cache(llama_cpp) -> dict:
    """llama.cpp keeps its key/value cache in float16 by default; float32 compares like with like."""
    return {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}


def best_time(run, repeats: int) -> tuple[float, list[int]]:
    tokens = run()  # warm-up: first-call allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = run()
        times.append(time.perf_counter() - start)
    return min(times), tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a gptkit checkpoint (default: a random model, see --family)")
    parser.add_argument("--family", choices=FAMILIES, default="llama")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per run (prompt + tokens <= context)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from gptkit.checkpoint import load_checkpoint
    from gptkit.export import export
    from gptkit.export.onnx import kv_path, onnx_greedy
    from gptkit.generate import generate

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="gptkit-export-bench-"))
    ckpt = args.ckpt or random_checkpoint(folder, args.family, args.n_layer, args.n_embd, args.n_head, args.block_size)
    checkpoint = load_checkpoint(ckpt)
    model = checkpoint.build_model("cpu").eval()
    prompt = checkpoint.tokenizer().encode("\n")[:1] or [0]
    n = min(args.tokens, model.config.block_size - len(prompt))
    start = time.perf_counter()
    onnx_file = export(ckpt, "onnx", folder / "model.onnx")
    print(f"exported {onnx_file} and {kv_path(onnx_file).name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    plain = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    cached = ort.InferenceSession(str(kv_path(onnx_file)), options, providers=["CPUExecutionProvider"])
    runs = {
        "gptkit (torch, KV cache)": lambda: list(generate(model, prompt, n, temperature=0.0, top_k=None)),
        "onnxruntime, KV cache": lambda: onnx_greedy(cached, prompt, n),
        "onnxruntime, no cache": lambda: onnx_greedy(plain, prompt, n, kv_cache=False),
    }
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("llama-cpp-python is not installed: no llama.cpp row", file=sys.stderr)
    if llama_cpp is not None and checkpoint.tokenizer().kind in ("bpe", "tiktoken"):
        gguf_file = export(ckpt, "gguf", folder / "model.gguf")
        # logits_all: llama-cpp-python fills `scores` row by row only then (one row per step when decoding).
        llama = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=model.config.block_size, n_threads=1, verbose=False,
                                logits_all=True, **float32_cache(llama_cpp))

        def llama_cpp_greedy() -> list[int]:
            llama.reset()
            llama.eval(prompt)
            out = []
            for _ in range(n):
                out.append(int(llama.scores[llama.n_tokens - 1].argmax()))
                llama.eval(out[-1:])
            return out

        runs["llama.cpp (GGUF float32, float32 KV cache)"] = llama_cpp_greedy

    print_parity(model, folder, ckpt, onnx_file, llama_cpp)
    results = {name: best_time(run, args.repeats) for name, run in runs.items()}
    reference = results["gptkit (torch, KV cache)"][1]
    c = model.config
    print(f"\n{c.n_layer} layers, {c.n_embd} wide, {c.n_head} heads, {c.position}/{c.norm}/{c.mlp}, "
          f"{n} tokens after a {len(prompt)}-token prompt, batch 1, 1 thread, best of {args.repeats}\n")
    print("| decoder | tokens/s | ms/token | same tokens as gptkit |")
    print("|---|---:|---:|---|")
    for name, (seconds, tokens) in results.items():
        print(f"| {name} | {n / seconds:,.0f} | {1000 * seconds / n:.2f} | {'yes' if tokens == reference else 'NO'} |")


def print_parity(model, folder: Path, ckpt: Path, onnx_file: Path, llama_cpp) -> None:
    """Max |logit difference| from gptkit over one full window, per runtime."""
    import numpy as np
    import onnxruntime as ort

    from gptkit.export import export

    c = model.config
    ids = torch.randint(0, c.vocab_size, (1, c.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.unpadded(model(ids)[0])[0].numpy()
    rows = {}
    try:
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(export(ckpt, "hf", folder / "hf")).eval()
        with torch.no_grad():
            rows["transformers (hf, float32)"] = hf(ids).logits[0].numpy()
    except ImportError:
        print("transformers is not installed: no transformers row", file=sys.stderr)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    rows["onnxruntime (onnx)"] = session.run(["logits"], {"input_ids": ids.numpy()})[0][0]
    if llama_cpp is not None and (folder / "model.gguf").is_file():
        for dtype in ("float32", "float16"):
            path = export(ckpt, "gguf", folder / f"model-{dtype}.gguf", dtype=dtype)
            llama = llama_cpp.Llama(model_path=str(path), n_ctx=c.block_size, n_batch=c.block_size, logits_all=True,
                                    n_threads=1, verbose=False, **float32_cache(llama_cpp))
            llama.eval(ids[0].tolist())
            rows[f"llama.cpp (gguf, {dtype})"] = np.asarray(llama.scores[: c.block_size])
    print(f"\nparity over {c.block_size} positions (gptkit float32 is the reference)\n")
    print("| runtime | max abs logit difference | same argmax at every position |")
    print("|---|---:|---|")
    for name, got in rows.items():
        same = bool((got.argmax(-1) == want.argmax(-1)).all())
        print(f"| {name} | {np.abs(got - want).max():.2e} | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
