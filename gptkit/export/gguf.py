"""Export to one GGUF file, the format llama.cpp (and the tools built on it) loads.

Written with the `gguf` package (llama.cpp's own writer): a header of key/value metadata, then the
tensors. Two architectures, as source.py decides:

    gpt2    token_embd, position_embd, blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up,
            ffn_down} (+ .bias each), output_norm (+ .bias), output (untied only)
    llama   token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
            ffn_up, ffn_down}, output_norm, output (untied only)

Layout notes (llama.cpp's loader, src/models/{gpt2,llama}.cpp):
  * gguf writes a (rows, cols) array as ggml dims {cols, rows}: nn.Linear's (out, in) is what llama.cpp
    expects, so weights go in as they are (only Hugging Face's GPT-2 Conv1D needs a transpose).
  * gptkit's rotary embedding turns channel pairs (2i, 2i+1), which is llama.cpp's "normal" rope for the
    llama architecture: W_q and W_k need no permutation here (unlike the Hugging Face export).
  * llama.cpp requires every GPT-2 bias: source.py wrote zeros where the model has none.
  * a tied model has no output.weight: llama.cpp then reuses token_embd.
  * llama.cpp's GELU is the tanh approximation (on CPU read from a float16 table), gptkit's the exact erf
    form: a GPT-2-family model drifts slightly (docs/export.md measures it).

The tokenizer, with bos/eos ids (llama.cpp defaults both to id 11 when absent) and no BOS added:
  * byte-level BPE (gptkit's bpe, tiktoken) as llama.cpp's "gpt2" model: tokens in GPT-2's byte-to-unicode
    form, the merges (tokenizer_files.byte_level_vocab_and_merges), token types, and the *name* of the split
    regex (`tokenizer.ggml.pre`: llama.cpp has the regexes built in; an unknown one is refused);
  * SentencePiece BPE as llama.cpp's "llama" (SentencePiece) model: pieces, scores, types, byte fallback,
    and no space prefix (gptkit trains without SentencePiece's dummy prefix).
A char tokenizer, or SentencePiece unigram (llama.cpp's SentencePiece tokenizer merges by score, it does
not search the most likely segmentation), is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gptkit.errors import GptkitError
from gptkit.export.source import NORM_EPS, ROPE_BASE, ExportSource

# llama.cpp's names for the split regexes gptkit knows (tokenizers/bpe.py PATTERNS; tiktoken's r50k,
# cl100k and o200k use the same regexes): `tokenizer.ggml.pre`.
PRE_TOKENIZERS = {"gpt2": "gpt-2", "gpt4": "llama-bpe", "gpt4o": "gpt-4o"}
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 5, 6  # gguf.TokenType


def pre_tokenizer_name(pattern: str) -> str:
    from gptkit.tokenizers.bpe import PATTERNS
    from gptkit.tokenizers.hf_gpt2 import GPT2_REGEX

    if pattern == GPT2_REGEX:  # GPT-2's regex as Hugging Face writes it (tokenizers imported from a HF folder)
        return PRE_TOKENIZERS["gpt2"]
    name = next((n for n, regex in PATTERNS.items() if regex == pattern), None)
    if name is None:
        raise GptkitError(
            "llama.cpp has no built-in split regex matching this tokenizer's pattern",
            hint="llama.cpp knows the gpt2, gpt4 (cl100k) and gpt4o (o200k) patterns; --format hf and onnx take any",
        )
    return PRE_TOKENIZERS[name]


def gguf_vocabulary(tokenizer, vocab_size: int) -> dict:
    """tokens, token types, merges and the pre-tokenizer name of a byte-level BPE tokenizer."""
    from gptkit.export.tokenizer_files import byte_level_vocab_and_merges

    if tokenizer.kind == "sentencepiece" and tokenizer.model_type == "bpe":
        return sentencepiece_vocabulary(tokenizer)
    from gptkit.tokenizers.tiktoken_backed import TiktokenBackedTokenizer

    if not isinstance(tokenizer, TiktokenBackedTokenizer):  # bpe, tiktoken, hf-bpe
        raise GptkitError(
            f"GGUF export needs a byte-level BPE or SentencePiece BPE tokenizer; this model uses {tokenizer.name}",
            hint="llama.cpp has no equivalent of gptkit's char tokenizer or of SentencePiece unigram's search; "
            "--format hf and onnx take every tokenizer",
        )
    encoding = tokenizer.encoding
    vocab, merges = byte_level_vocab_and_merges(tokenizer)
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]  # ids no token uses (gaps before the specials)
    types = [TOKEN_UNUSED] * vocab_size
    for text, token_id in vocab.items():
        tokens[token_id], types[token_id] = text, TOKEN_NORMAL
    for text, token_id in encoding._special_tokens.items():
        tokens[token_id], types[token_id] = text, TOKEN_CONTROL
    return {
        "model": "gpt2",
        "tokens": tokens,
        "types": types,
        "merges": [f"{left} {right}" for left, right in merges],
        "pre": pre_tokenizer_name(encoding._pat_str),
    }


def sentencepiece_vocabulary(tokenizer) -> dict:
    """A SentencePiece BPE model's pieces, scores and types, as llama.cpp's SentencePiece tokenizer reads them."""
    sp = tokenizer.sp
    types = []
    for i in range(sp.get_piece_size()):
        kinds = ((sp.is_unknown, TOKEN_UNKNOWN), (sp.is_control, TOKEN_CONTROL), (sp.is_byte, TOKEN_BYTE), (sp.is_unused, TOKEN_UNUSED))
        types.append(next((kind for test, kind in kinds if test(i)), TOKEN_NORMAL))
    return {
        "model": "llama",
        "tokens": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
        "scores": [sp.get_score(i) for i in range(sp.get_piece_size())],
        "types": types,
        "unk": sp.unk_id(),
        "pre": "default",
    }


def gguf_tensors(source: ExportSource) -> dict[str, torch.Tensor]:
    """GGUF names -> tensors in the (out, in) layout llama.cpp reads (module docstring)."""
    t, c = source.tensors, source.config
    out = {"token_embd.weight": t["token_embedding.weight"]}
    if source.architecture == "gpt2":
        out["position_embd.weight"] = t["position_embedding.weight"]
        parts = (("attn_norm", "attn_norm"), ("attn.qkv", "attn_qkv"), ("attn.proj", "attn_output"),
                 ("mlp_norm", "ffn_norm"), ("mlp.fc", "ffn_up"), ("mlp.proj", "ffn_down"))
        for i in range(c.n_layer):
            for ours, theirs in parts:
                for kind in ("weight", "bias"):
                    out[f"blk.{i}.{theirs}.{kind}"] = t[f"blocks.{i}.{ours}.{kind}"]
        out["output_norm.bias"] = t["final_norm.bias"]
    else:
        for i in range(c.n_layer):
            kv = c.kv_heads * source.head_size
            q, k, v = t[f"blocks.{i}.attn.qkv.weight"].split((c.n_embd, kv, kv))  # all heads' q, then k, then v
            gate, up = t[f"blocks.{i}.mlp.fc.weight"].split(source.ffn_hidden)  # silu(gate) * up
            out.update({
                f"blk.{i}.attn_norm.weight": t[f"blocks.{i}.attn_norm.weight"],
                f"blk.{i}.attn_q.weight": q,
                f"blk.{i}.attn_k.weight": k,
                f"blk.{i}.attn_v.weight": v,
                f"blk.{i}.attn_output.weight": t[f"blocks.{i}.attn.proj.weight"],
                f"blk.{i}.ffn_norm.weight": t[f"blocks.{i}.mlp_norm.weight"],
                f"blk.{i}.ffn_gate.weight": gate,
                f"blk.{i}.ffn_up.weight": up,
                f"blk.{i}.ffn_down.weight": t[f"blocks.{i}.mlp.proj.weight"],
            })
    out["output_norm.weight"] = t["final_norm.weight"]
    if not source.tied:
        out["output.weight"] = t["lm_head.weight"]
    return out


def _require_gguf():
    try:
        import gguf
    except ImportError:
        raise GptkitError("GGUF export needs the `gguf` package", hint="pip install 'gptkit[export]'") from None
    return gguf


def export_gguf(source: ExportSource, out: Path, dtype: torch.dtype) -> Path:
    """Write `out` (one file). float16 stores the matrices in half precision, 1-D tensors stay float32
    (as llama.cpp's converter does: norms and biases are tiny and precision-sensitive)."""
    gguf = _require_gguf()
    import os

    c, arch = source.config, source.architecture
    vocabulary = gguf_vocabulary(source.tokenizer, c.vocab_size)  # refuses before anything is written
    if out.is_dir():
        raise GptkitError(f"{out} is a folder", hint="--format gguf writes one file, e.g. model.gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    writer.add_name(f"gptkit {arch} {c.n_layer}x{c.n_embd}")
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(source.ffn_hidden)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.kv_heads)  # fewer than the query heads: grouped-query attention
    writer.add_vocab_size(c.vocab_size)
    if arch == "gpt2":
        writer.add_layer_norm_eps(NORM_EPS)
    else:
        writer.add_layer_norm_rms_eps(NORM_EPS)
        writer.add_rope_dimension_count(source.head_size)  # every channel of a head turns (no partial rope)
        writer.add_rope_freq_base(ROPE_BASE)
    half = dtype == torch.float16
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if half else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model(vocabulary["model"])
    writer.add_tokenizer_pre(vocabulary["pre"])
    writer.add_token_list(vocabulary["tokens"])
    writer.add_token_types(vocabulary["types"])
    if vocabulary["model"] == "gpt2":
        writer.add_token_merges(vocabulary["merges"])
    else:
        writer.add_token_scores(vocabulary["scores"])
        writer.add_unk_token_id(vocabulary["unk"])
        writer.add_add_space_prefix(False)  # no "▁" before the text: gptkit trains without the dummy prefix
        writer.add_remove_extra_whitespaces(False)
    eot = source.tokenizer.eot_id
    if eot is not None:
        writer.add_bos_token_id(eot)
        writer.add_eos_token_id(eot)
    writer.add_add_bos_token(False)  # gptkit never puts a token before the prompt
    for name, tensor in gguf_tensors(source).items():
        array = tensor.contiguous().numpy()
        writer.add_tensor(name, array.astype("float16") if half and array.ndim == 2 else array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, out)  # written beside it, then renamed: readers never see half a file
    return out
