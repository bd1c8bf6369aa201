"""Export to a Hugging Face folder: `AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer` load it.

    DIR/config.json              GPT2LMHeadModel or LlamaForCausalLM, with gptkit's sizes
    DIR/model.safetensors        the weights under transformers' names
    DIR/tokenizer.json (+ tokenizer_config.json)    see tokenizer_files.py
    DIR/generation_config.json   bos/eos ids
    DIR/README.md                a model card: what it is, how it was trained, its val loss
    DIR/gptkit.json              gptkit's tokenizer spec, model config, step, val loss, train config

Layout changes on the way (the rest is renaming):
  * GPT-2: exact GELU is transformers' "gelu", the tanh form (gelu_approximate = "tanh") "gelu_new".
  * GPT-2: transformers keeps GPT-2's `Conv1D` layers, whose weight is (in, out), the transpose of
    nn.Linear's (out, in): c_attn, c_proj and c_fc are transposed.
  * Llama: gptkit's rotary embedding turns channel pairs (2i, 2i+1) of each head; transformers' Llama turns
    (i, i + D/2) ("rotate_half"). Same angles, other pairing, so the rows of W_q and W_k are permuted
    within each head (even channels first, then odd). q.k is unchanged because q and k move together;
    values and the output projection keep their order.
  * The fused matrices are cut: qkv -> q (H*D rows), k and v (H_kv*D rows each: num_key_value_heads, fewer
    than the query heads under grouped-query attention); SwiGLU's fc -> gate (first half), up (second half).

The way back is gptkit/hf_import.py (with hf_llama.py), the reader of every Hugging Face folder: an
exported folder comes back as the model that was exported (`gptkit train --init-from DIR`), and
`read_hf_folder` adds the step and val loss gptkit.json recorded (a gptkit Checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptkit.errors import GptkitError
from gptkit.export.source import NORM_EPS, ROPE_BASE, ExportSource
from gptkit.hf_llama import pairs_to_halves  # gptkit's rotary pairs -> HF's halves (and back: hf_llama.py)

CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # GPT-2's (in, out) layers


# ---------------------------------------------------------------------------------------------------
# gptkit -> transformers


def hf_config(source: ExportSource, dtype: str) -> dict:
    c = source.config
    eot = source.tokenizer.eot_id
    common = {
        "vocab_size": c.vocab_size,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": source.tied,
        "dtype": dtype,  # transformers 5 reads "dtype", 4.x "torch_dtype"
        "torch_dtype": dtype,
        "use_cache": True,
    }
    if source.architecture == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_positions": c.block_size,
            "n_ctx": c.block_size,  # not a transformers 5 field, but llama.cpp's converter reads it
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": source.ffn_hidden,
            # gptkit's GELU is the exact erf form ("gelu") unless the model came from GPT-2's weights, whose
            # tanh approximation it then keeps (config.gelu_approximate = "tanh"): "gelu_new".
            "activation_function": "gelu_new" if c.gelu_approximate == "tanh" else "gelu",
            "layer_norm_epsilon": NORM_EPS,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": True,
            **common,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.n_embd,
        "intermediate_size": source.ffn_hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.kv_heads,  # grouped-query attention when fewer than the query heads
        "head_dim": source.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": NORM_EPS,
        "rope_theta": ROPE_BASE,  # transformers 4.x; 5 reads rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE},
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        **common,
    }


def hf_state_dict(source: ExportSource) -> dict[str, torch.Tensor]:
    """The weights under transformers' names, in its layouts (module docstring)."""
    t, c = source.tensors, source.config
    out: dict[str, torch.Tensor] = {}
    if source.architecture == "gpt2":
        out["transformer.wte.weight"] = t["token_embedding.weight"]
        out["transformer.wpe.weight"] = t["position_embedding.weight"]
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            for a, b in (("attn_norm", "ln_1"), ("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                         ("mlp_norm", "ln_2"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
                weight = t[ours + a + ".weight"]
                out[theirs + b + ".weight"] = weight.t() if b in CONV1D else weight
                out[theirs + b + ".bias"] = t[ours + a + ".bias"]
        out["transformer.ln_f.weight"] = t["final_norm.weight"]
        out["transformer.ln_f.bias"] = t["final_norm.bias"]
    else:
        C, hidden, kv = c.n_embd, source.ffn_hidden, c.kv_heads * source.head_size
        out["model.embed_tokens.weight"] = t["token_embedding.weight"]
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            q, k, v = t[ours + "attn.qkv.weight"].split((C, kv, kv))  # rows: all heads' q, then k, then v
            out[theirs + "self_attn.q_proj.weight"] = pairs_to_halves(q, c.n_head)
            out[theirs + "self_attn.k_proj.weight"] = pairs_to_halves(k, c.kv_heads)
            out[theirs + "self_attn.v_proj.weight"] = v
            out[theirs + "self_attn.o_proj.weight"] = t[ours + "attn.proj.weight"]
            gate, up = t[ours + "mlp.fc.weight"].split(hidden)  # model.MLP: silu(first half) * second half
            out[theirs + "mlp.gate_proj.weight"] = gate
            out[theirs + "mlp.up_proj.weight"] = up
            out[theirs + "mlp.down_proj.weight"] = t[ours + "mlp.proj.weight"]
            out[theirs + "input_layernorm.weight"] = t[ours + "attn_norm.weight"]
            out[theirs + "post_attention_layernorm.weight"] = t[ours + "mlp_norm.weight"]
        out["model.norm.weight"] = t["final_norm.weight"]
    if not source.tied:  # tied: transformers re-ties lm_head to the embedding, and the file must not hold both
        out["lm_head.weight"] = t["lm_head.weight"]
    return out


def model_card(source: ExportSource) -> str:
    c, train = source.config, source.train_config
    val = f"{source.val_loss:.4f}" if isinstance(source.val_loss, float) else "not recorded"
    family = "GPT-2 (GPT2LMHeadModel)" if source.architecture == "gpt2" else "Llama (LlamaForCausalLM)"
    params = sum(v.numel() for k, v in source.tensors.items() if not (k.endswith(".bias") and not c.bias))
    lines = [
        "---",
        "library_name: transformers",
        "tags: [gptkit, causal-lm]",
        "---",
        "",
        f"# A {family} model trained with gptkit",
        "",
        f"- architecture: {family}; {c.n_layer} layers, {c.n_head} heads ({c.kv_heads} key/value), {c.n_embd} wide, context {c.block_size} tokens, "
        f"{params:,} parameters, output layer {'tied to' if source.tied else 'separate from'} the token embedding",
        f"- gptkit components: position = {c.position}, norm = {c.norm}, mlp = {c.mlp}, bias = {str(c.bias).lower()}",
        f"- tokenizer: gptkit `{source.tokenizer.name}` ({c.vocab_size:,} ids), exported to tokenizer.json",
        f"- training: {source.step:,} steps on `{train.get('data', '?')}` (optimizer {train.get('optimizer', '?')}, "
        f"learning rate {train.get('learning_rate', '?')}, batch {train.get('batch_size', '?')} x {train.get('grad_accum', 1)} "
        f"x {c.block_size} tokens)",
        f"- validation loss: {val}",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
        'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        'ids = tokenizer("Hello", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=50, do_sample=False)[0]))",
        "```",
        "",
        "Exported by `gptkit export --format hf`.",
        "",
    ]
    return "\n".join(lines)


def export_hf(source: ExportSource, out: Path, dtype: torch.dtype) -> Path:
    """Write the folder `out` (created; existing files of the same names are replaced)."""
    from safetensors.torch import save_file

    from gptkit.export.tokenizer_files import write_tokenizer_files

    dtype_name = str(dtype).removeprefix("torch.")
    if out.exists() and not out.is_dir():
        raise GptkitError(f"{out} is a file", hint="--format hf writes a folder: pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype).contiguous() for k, v in hf_state_dict(source).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})  # "pt": what save_pretrained writes
    config = hf_config(source, dtype_name)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    eot = source.tokenizer.eot_id
    generation = {"bos_token_id": eot, "eos_token_id": eot}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    write_tokenizer_files(source.tokenizer, out, source.config.block_size)
    # What transformers' files cannot say: gptkit's exact tokenizer and the run's numbers.
    # model_config: what config.json cannot say, e.g. that a GPT-2's zero biases stand for none (hf_import).
    ours = {"format": "gptkit.hf-export", "tokenizer": source.tokenizer.spec(), "model_config": source.config.to_dict(),
            "step": source.step, "val_loss": source.val_loss, "train_config": source.train_config}
    (out / "gptkit.json").write_text(json.dumps(ours, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card(source), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------------
# transformers -> gptkit (the way back)


def read_hf_folder(folder: str | Path):
    """A folder written by export_hf -> a gptkit Checkpoint (weights in float32; vocabulary unpadded),
    with the step, val loss and train config gptkit.json recorded. The weights, model config and
    tokenizer come through hf_import, which `train --init-from DIR` uses too."""
    from gptkit.checkpoint import Checkpoint
    from gptkit.hf_import import import_hf_folder
    from gptkit.tokenizers.hf_folder import export_record

    folder = Path(folder)
    ours = export_record(folder) if folder.is_dir() else None
    if ours is None or not (folder / "model.safetensors").is_file():
        raise GptkitError(
            f"{folder} is not a folder written by `gptkit export --format hf`",
            hint="it needs config.json, model.safetensors and gptkit.json; other Hugging Face folders go through "
            "`gptkit train --init-from DIR`",
        )
    model, state, spec = import_hf_folder(folder)
    return Checkpoint(
        model_config=model, tokenizer_spec=spec, state_dict=state, step=ours.get("step", 0),
        val_loss=ours.get("val_loss"), train_config=ours.get("train_config", {}),
    )
