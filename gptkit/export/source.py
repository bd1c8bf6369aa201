"""What every export starts from: a checkpoint's weights, read as one of two known architectures.

A gptkit model is a set of component choices (model.py). Two combinations have a name that other
runtimes know:

    gpt2    learned positions, LayerNorm, GELU, biases on or off     -> GPT-2 (transformers, llama.cpp "gpt2")
    llama   rotary positions, RMSNorm, SwiGLU, no biases             -> Llama (transformers, llama.cpp "llama")

Both use the sequential block and the whole context; llama also takes grouped-query attention (n_kv_head,
transformers' num_key_value_heads). Anything else (ReLU^2, rotary with LayerNorm, ALiBi, no positions,
QK-norm, a sliding window, the parallel block, ...) has no equivalent in those runtimes, so `architecture_of`
refuses it with a message that names the component and the choices that would export.

`ExportSource.tensors` holds the weights under gptkit's own state-dict names, in float32, with two changes
every target wants:
  * vocabulary padding stripped: the rows past vocab_size (model.py, `vocab_multiple`) are never real
    tokens, so the exported embedding and output matrices have exactly vocab_size rows;
  * for gpt2, a bias of zeros wherever the model has none: GPT-2 runtimes always add a bias (x + 0 = x).
The format writers (hf.py, gguf.py) only rename and re-lay-out these tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptkit.config import ModelConfig
from gptkit.errors import GptkitError

# The component choices of each exportable architecture (field -> value), as in ModelConfig.
ARCHITECTURES = {
    "gpt2": {"position": "learned", "norm": "layernorm", "mlp": "gelu"},
    "llama": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
}
# Parts neither architecture has, whatever the other choices: (does the config use it?, why it cannot go).
NO_COUNTERPART = (
    (lambda c: c.position == "alibi",
     "ALiBi positions (a distance bias on the attention scores) have no counterpart in GPT-2 or Llama runtimes"),
    (lambda c: c.position == "none",
     "a model without positions (position = none) has no counterpart in GPT-2 or Llama runtimes, which always add or rotate them"),
    (lambda c: c.block == "parallel", "the parallel block (attention and MLP side by side) is neither GPT-2's nor Llama's"),
    (lambda c: c.qk_norm, "QK-norm (normalised queries and keys) is neither in GPT-2 nor in Llama"),
    (lambda c: c.attention_window > 0, "sliding-window attention (attention_window) is neither in GPT-2 nor in Llama"),
)
# Only Llama runtimes have fewer key/value heads than query heads (grouped-query attention).
GPT2_NEEDS_ALL_KV_HEADS = "GPT-2 has one key/value head per query head (n_kv_head = 0); Llama takes grouped-query attention"
NORM_EPS = 1e-5  # model.LayerNorm (nn.LayerNorm's default eps) and model.RMSNorm (given eps=1e-5)
ROPE_BASE = 10000.0  # model.Rotary's default base


def _describe(choices: dict) -> str:
    return ", ".join(f"{name} = {value}" for name, value in choices.items())


def architecture_of(config: ModelConfig) -> str:
    """'gpt2' or 'llama'; a GptkitError naming what does not fit otherwise."""
    hint = (
        f"what exports: GPT-2 ({_describe(ARCHITECTURES['gpt2'])}, bias on or off) or "
        f"Llama ({_describe(ARCHITECTURES['llama'])}, n_kv_head any), both with block = sequential, "
        "no qk_norm and attention_window = 0"
    )
    reasons = [why for uses, why in NO_COUNTERPART if uses(config)]
    if reasons:
        raise GptkitError(f"this model cannot be exported: {'; '.join(reasons)}", hint=hint)
    for name, choices in ARCHITECTURES.items():
        if all(getattr(config, key) == value for key, value in choices.items()):
            if name == "gpt2" and config.kv_heads != config.n_head:
                why = f"{GPT2_NEEDS_ALL_KV_HEADS} (this model: n_kv_head = {config.n_kv_head})"
                raise GptkitError(f"this model cannot be exported: {why}", hint=hint)
            return name
    # Name the family the model is closest to, and what stands in its way.
    best = max(ARCHITECTURES, key=lambda n: sum(getattr(config, k) == v for k, v in ARCHITECTURES[n].items()))
    wrong = {k: getattr(config, k) for k, v in ARCHITECTURES[best].items() if getattr(config, k) != v}
    why = "relu2 (ReLU squared) has no counterpart in GPT-2 or Llama runtimes" if config.mlp == "relu2" else (
        f"it mixes the two families ({_describe(wrong)} where {best} needs "
        f"{_describe({k: ARCHITECTURES[best][k] for k in wrong})})"
    )
    raise GptkitError(f"this model cannot be exported: {why}", hint=hint)


@dataclass
class ExportSource:
    """A checkpoint ready to export: its config, architecture, tokenizer and adjusted weights."""

    config: ModelConfig
    architecture: str
    tokenizer: object  # a gptkit.tokenizers.Tokenizer
    tensors: dict[str, torch.Tensor]
    step: int = 0
    val_loss: float | None = None
    train_config: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def head_size(self) -> int:
        return self.config.n_embd // self.config.n_head

    @property
    def ffn_hidden(self) -> int:
        """The MLP's hidden width. SwiGLU's fc computes gate and value in one matmul: 2 x hidden rows."""
        rows = self.tensors["blocks.0.mlp.fc.weight"].shape[0]
        return rows // 2 if self.architecture == "llama" else rows

    @property
    def tied(self) -> bool:
        return "lm_head.weight" not in self.tensors

    def output_matrix(self) -> torch.Tensor:
        """(vocab_size, n_embd): the logits' matrix, which is the token embedding when tied."""
        return self.tensors.get("lm_head.weight", self.tensors["token_embedding.weight"])

    def build_model(self):
        """A gptkit GPT holding these (unpadded) weights: what the exports are compared against."""
        from dataclasses import replace

        from gptkit.model import GPT

        model = GPT(replace(self.config, vocab_multiple=1))
        state = {k: v for k, v in self.tensors.items() if k in model.state_dict()}
        model.load_state_dict(state, strict=True)
        return model.eval()


def read_source(ckpt: str | Path) -> ExportSource:
    """Load and verify a checkpoint, check that it exports, and prepare its weights (module docstring)."""
    from gptkit.checkpoint_format import MODEL
    from gptkit.run_folder import load_run_checkpoint

    checkpoint = load_run_checkpoint(ckpt)  # a damaged file's error names the run's last good checkpoint
    if checkpoint.kind != MODEL:
        raise GptkitError(
            f"{ckpt} is an {checkpoint.kind}, not a full model, and exports need every weight",
            hint="merge the adapter into its base model first, then export the merged checkpoint",
        )
    config = checkpoint.model_config
    architecture = architecture_of(config)
    tokenizer = checkpoint.tokenizer()
    if tokenizer.vocab_size != config.vocab_size:
        raise GptkitError(
            f"the checkpoint's tokenizer has {tokenizer.vocab_size:,} ids but its model {config.vocab_size:,}",
            hint="the checkpoint is not one written by `gptkit train`",
        )
    tensors = {}
    for name, tensor in checkpoint.state_dict.items():
        tensor = tensor.detach().to("cpu", torch.float32)
        if name in ("token_embedding.weight", "lm_head.weight"):
            tensor = tensor[: config.vocab_size]  # the padded rows are never real tokens
        tensors[name] = tensor.contiguous()
    if architecture == "gpt2" and not config.bias:
        tensors.update(_zero_biases(config, tensors))
    return ExportSource(
        config=config,
        architecture=architecture,
        tokenizer=tokenizer,
        tensors=tensors,
        step=checkpoint.step,
        val_loss=checkpoint.val_loss,
        train_config=checkpoint.train_config,
        path=Path(ckpt),
    )


def _zero_biases(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A zero bias for every LayerNorm and Linear of a bias-free GPT-2-family model."""
    names = ["final_norm"] + [
        f"blocks.{i}.{part}" for i in range(config.n_layer) for part in ("attn_norm", "attn.qkv", "attn.proj", "mlp_norm", "mlp.fc", "mlp.proj")
    ]
    # A bias has one entry per output row of its weight (per channel of a norm).
    return {f"{name}.bias": torch.zeros(tensors[f"{name}.weight"].shape[0]) for name in names}
