"""Weights in: a Hugging Face GPT-2 or Llama (a folder or a hub name) or a gptkit checkpoint, as a gptkit model.

    config, state_dict, tokenizer_spec = load_init_weights("path/to/hf-folder")   # or "gpt2", or out/
    convert("gpt2", "out/gpt2")        # out/gpt2/ckpt.safetensors, ready for sample / eval / export

A Hugging Face folder holds config.json, the weights (model.safetensors, or pytorch_model.bin read
with torch.load(weights_only=True): tensors only, no pickled code) and its tokenizer. Two families
map onto gptkit's components, so the import is a renaming:

  * GPT-2 (model_type "gpt2": learned positions, LayerNorm, GELU) is gptkit's default architecture:

    HF (transformer.)                  gptkit
    wte, wpe                           token_embedding, position_embedding
    h.{i}.ln_1, h.{i}.ln_2             blocks.{i}.attn_norm, blocks.{i}.mlp_norm
    h.{i}.attn.c_attn, attn.c_proj     blocks.{i}.attn.qkv, blocks.{i}.attn.proj
    h.{i}.mlp.c_fc, mlp.c_proj         blocks.{i}.mlp.fc, blocks.{i}.mlp.proj
    ln_f                               final_norm
    lm_head (absent when tied)         lm_head

    HF's Conv1D stores its weight as (in, out), nn.Linear as (out, in), so the matrices are transposed.
    The activation names the GELU: "gelu_new" (GPT-2's own, the tanh approximation) gives
    gelu_approximate = "tanh", "gelu" the exact erf form (logits would differ by ~1e-3 otherwise).
    GPT-2 files always hold biases; a folder written by `gptkit export` from a bias-free model holds
    zeros there (export/source.py) and says so in gptkit.json, and comes back bias-free.
  * Llama (model_type "llama": rotary, RMSNorm, SwiGLU, no biases): hf_llama.py, which also refuses by
    name the Llama features gptkit's model does not compute (grouped-query attention, rope scaling, ...).

The tokenizer comes from tokenizers/hf_folder.py: the exact gptkit spec a gptkit export recorded in
gptkit.json, else what tokenizer.json (or vocab.json + merges.txt) describes, or a refusal naming it.

Hub names (gpt2, gpt2-medium, gpt2-large, gpt2-xl) are downloaded once through huggingface_hub (the
optional extra `hf`: pip install 'gptkit[hf]') into GPTKIT_CACHE/hf (~/.cache/gptkit/hf); offline,
the error names the cache and how to fill it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from gptkit.config import ModelConfig
from gptkit.errors import GptkitError
from gptkit.hf_llama import llama_model_config, llama_state_dict
from gptkit.tokenizers.hf_folder import export_record, read_folder_tokenizer, spec_vocab_size

HUB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"]
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}  # -> ModelConfig.gelu_approximate
FAMILIES = ("gpt2", "llama")  # config.json model_type values gptkit computes
_RENAMES = {  # HF GPT-2 name (without "transformer.") -> gptkit name; {i} is the layer
    "wte.weight": "token_embedding.weight",
    "wpe.weight": "position_embedding.weight",
    "ln_f.weight": "final_norm.weight",
    "ln_f.bias": "final_norm.bias",
}
_BLOCK_RENAMES = {
    "ln_1": "attn_norm", "ln_2": "mlp_norm", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj",
}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def is_hf_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_hf_config(path: Path) -> dict:
    source = path / "config.json"
    try:
        hf = json.loads(source.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise GptkitError(f"{source} is not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise GptkitError(f"{source} holds no model config")
    if hf.get("model_type") not in FAMILIES:
        raise GptkitError(
            f"{source} describes a {hf.get('model_type')!r} model; gptkit imports GPT-2 and Llama models only",
            hint="use a GPT-2 (model_type gpt2) or Llama (model_type llama) folder",
        )
    return hf


def hf_model_config(path: Path) -> ModelConfig:
    """config.json -> ModelConfig, refusing the variants gptkit's model does not compute. GPT-2 comes
    with bias = True here (what its files hold); import_hf_folder turns a gptkit export's zeros off."""
    hf = read_hf_config(path)
    source = path / "config.json"
    # transformers' own defaults: GPT-2 ties its output layer, Llama does not
    tied = bool(hf.get("tie_word_embeddings", hf["model_type"] == "gpt2"))
    if hf["model_type"] == "llama":
        return llama_model_config(hf, source, tied)
    activation = hf.get("activation_function", "gelu_new")
    n_embd = hf.get("n_embd", 768)
    unsupported = []
    if activation not in ACTIVATIONS:
        unsupported.append(f"activation_function {activation!r}")
    if hf.get("n_inner") not in (None, 4 * n_embd):
        unsupported.append(f"n_inner {hf['n_inner']} (gptkit's MLP is 4 x n_embd)")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("a non-standard attention scaling")
    if abs(float(hf.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        unsupported.append(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (gptkit's is 1e-5)")
    if unsupported:
        raise GptkitError(f"{source}: this GPT-2 variant has {', '.join(unsupported)}, which gptkit's model does not compute")
    return ModelConfig(
        vocab_size=int(hf.get("vocab_size", 50257)), vocab_multiple=1, block_size=int(hf.get("n_positions", 1024)),
        n_layer=int(hf.get("n_layer", 12)), n_head=int(hf.get("n_head", 12)), n_embd=int(n_embd), dropout=0.0, bias=True,
        position="learned", norm="layernorm", mlp="gelu", gelu_approximate=ACTIVATIONS[activation], tie_embeddings=tied,
    )


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors: model.safetensors, else pytorch_model.bin through torch.load(weights_only=True)."""
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(path / "model.safetensors"))
        except Exception as e:  # safetensors' errors for a damaged file vary by version
            raise GptkitError(f"{path / 'model.safetensors'} cannot be read ({type(e).__name__}: {str(e)[:100]})") from None
    if (path / "pytorch_model.bin").is_file():
        try:  # weights_only: the unpickler accepts tensors and plain containers only, never code
            tensors = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise GptkitError(
                f"{path / 'pytorch_model.bin'} cannot be read as plain tensors ({type(e).__name__}: {str(e)[:100]})",
                hint="gptkit never unpickles arbitrary objects; convert the file to model.safetensors",
            ) from None
        if not isinstance(tensors, dict):
            raise GptkitError(f"{path / 'pytorch_model.bin'} does not hold a state dict")
        return tensors
    raise GptkitError(f"{path} has no weights (model.safetensors or pytorch_model.bin)")


def gpt2_state_dict(tensors: dict[str, torch.Tensor], config: ModelConfig, source: Path) -> dict[str, torch.Tensor]:
    """Rename (and transpose the Conv1D matrices of) HF GPT-2 tensors into gptkit's state dict."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older files
        if name == "lm_head.weight":
            if not config.tie_embeddings:  # tied: the same matrix as wte (some files hold both)
                out["lm_head.weight"] = tensor
            continue
        if name in _RENAMES:
            out[_RENAMES[name]] = tensor
            continue
        parts = name.split(".")  # h, i, module..., weight|bias
        module = ".".join(parts[2:-1])
        if parts[0] != "h" or module not in _BLOCK_RENAMES:
            raise GptkitError(f"{source}: unexpected tensor {name!r} for a GPT-2 model")
        if module in _CONV1D and parts[-1] == "weight":
            tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
        out[f"blocks.{parts[1]}.{_BLOCK_RENAMES[module]}.{parts[-1]}"] = tensor.contiguous()
    if "token_embedding.weight" not in out:
        raise GptkitError(f"{source}: no token embedding (wte.weight) among the weights")
    if not config.tie_embeddings and "lm_head.weight" not in out:
        raise GptkitError(f"{source}: config.json says the output layer is untied, but there is no lm_head.weight")
    return {k: v.float() for k, v in out.items()}


def hf_state_dict(tensors: dict[str, torch.Tensor], config: ModelConfig, source: Path) -> dict[str, torch.Tensor]:
    """A folder's tensors under gptkit's names and layouts, for the family `config` describes."""
    if config.position == "rope":
        return llama_state_dict(tensors, config, source)
    return gpt2_state_dict(tensors, config, source)


def _drop_zero_biases(config: ModelConfig, state: dict[str, torch.Tensor], record: dict | None):
    """A gptkit export of a bias-free GPT-2-family model wrote zeros for every bias (GPT-2 runtimes
    need them): give it back bias-free. Only when gptkit.json says the model had none (exports before
    it recorded the model config: when every bias is zero) and the biases are still all zero, so a
    folder trained further in transformers keeps the biases it learned."""
    biases = [name for name in state if name.endswith(".bias")]
    if record is None or config.position != "learned" or not biases:
        return config, state
    recorded = (record.get("model_config") or {}).get("bias")
    if recorded is True or not all(not state[name].any() for name in biases):
        return config, state
    return replace(config, bias=False), {k: v for k, v in state.items() if k not in biases}


def import_hf_folder(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """(ModelConfig, gptkit state dict, tokenizer spec) of a Hugging Face GPT-2 or Llama folder."""
    path = Path(path)
    config = hf_model_config(path)
    state = hf_state_dict(read_hf_weights(path), config, path)
    config, state = _drop_zero_biases(config, state, export_record(path))
    spec = read_folder_tokenizer(path)
    vocab_ids = spec_vocab_size(spec)
    if vocab_ids is not None and vocab_ids > config.vocab_size:
        raise GptkitError(f"{path}: the tokenizer has {vocab_ids:,} ids but the model only {config.vocab_size:,}")
    return config, state, spec


def hub_cache() -> Path:
    from gptkit.sources import cache_dir

    return cache_dir() / "hf"


def download_hub_model(name: str) -> Path:
    """The local folder of a hub GPT-2, downloaded on first use into hub_cache()."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise GptkitError(
            f"--init-from {name} downloads from the Hugging Face hub, which needs huggingface_hub",
            hint="pip install 'gptkit[hf]', or pass a local GPT-2 folder",
        ) from None
    cache = hub_cache()
    try:
        return Path(snapshot_download(repo_id=f"openai-community/{name}", cache_dir=str(cache), allow_patterns=HUB_FILES))
    except Exception as e:  # offline, hub errors, a refused connection: their types vary by version
        raise GptkitError(
            f"could not get {name} from the Hugging Face hub into the cache {cache} ({type(e).__name__}: {str(e)[:120]})",
            hint=f"connect once to fill the cache, or download elsewhere with `hf download openai-community/{name} "
            f"{' '.join(HUB_FILES)} --local-dir {name}`, copy the folder here and pass --init-from {name}/",
        ) from None


def load_init_weights(ref: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """(ModelConfig, state dict, tokenizer spec) of `ref`: a Hugging Face GPT-2 or Llama folder, a hub name
    (gpt2, gpt2-medium, gpt2-large, gpt2-xl; downloaded once), or a gptkit checkpoint (file or run folder)."""
    path = Path(ref)
    if path.exists():
        if is_hf_model_folder(path) and not (path / "ckpt.safetensors").exists():
            return import_hf_folder(path)
        from gptkit.checkpoint import load_checkpoint
        from gptkit.checkpoint_format import CKPT_NAME

        file = path / CKPT_NAME if path.is_dir() else path
        if not file.is_file():
            raise GptkitError(f"{path} is neither a Hugging Face folder (config.json) nor a gptkit checkpoint")
        ckpt = load_checkpoint(file)
        if ckpt.kind != "model":
            raise GptkitError(f"{file} is an {ckpt.kind}, not a full model", hint="initialise from its base model's checkpoint")
        return ckpt.model_config, ckpt.state_dict, ckpt.tokenizer_spec
    if str(ref) in HUB_MODELS:
        return import_hf_folder(download_hub_model(str(ref)))
    raise GptkitError(
        f"--init-from {ref}: no such folder or file, and not a hub model",
        hint=f"a Hugging Face GPT-2 or Llama folder, a gptkit checkpoint, or one of {', '.join(HUB_MODELS)}",
    )


def load_init_checkpoint(ref: str | Path):
    """load_init_weights as a checkpoint.Checkpoint (step 0, its checksum computed): what train(init_from=)
    starts from, so a Hugging Face folder or hub name works wherever a gptkit checkpoint does."""
    from gptkit.checkpoint import Checkpoint, load_checkpoint, weights_checksum
    from gptkit.checkpoint_format import CKPT_NAME

    path = Path(ref)
    hf_folder = is_hf_model_folder(path) and not (path / CKPT_NAME).exists()
    if not hf_folder and not (str(ref) in HUB_MODELS and not path.exists()):
        return load_checkpoint(path / CKPT_NAME if path.is_dir() else path)  # a gptkit checkpoint (its own errors)
    config, state, spec = load_init_weights(ref)
    return Checkpoint(config, spec, state, step=0, train_config={"init_from": str(ref)}, checksum="sha256:" + weights_checksum(state))


def convert(ref: str | Path, out_dir: str | Path) -> Path:
    """Write `ref` (as load_init_weights reads it) as out_dir/ckpt.safetensors; returns that path."""
    from gptkit.checkpoint import check_weights_fit, save_checkpoint
    from gptkit.checkpoint_format import CKPT_NAME
    from gptkit.model import GPT

    config, state, spec = load_init_weights(ref)
    check_weights_fit(config, {name: tuple(t.shape) for name, t in state.items()})  # config.json vs the tensors
    model = GPT.from_state_dict(config, state)  # no fresh weights: the imported tensors themselves
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / CKPT_NAME, model, spec, step=0, train_config={"init_from": str(ref)})
    return out / CKPT_NAME
