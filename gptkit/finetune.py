"""Stage 2b, `gptkit finetune`: adapt a trained model to new data, fully or with LoRA.

    ft, cfg = resolve_finetune_config(None, {"lora_rank": 8}, {"data": "data/new", "out": "out/ft"})
    result = finetune("out/ckpt.safetensors", ft, cfg)

Fine-tuning is training that starts from a checkpoint's weights, so it is train() (the one loop,
train.py and fit.py) with three things added:

    init_from=CKPT          the base model's weights, verified, and its model config
    transforms=[...]        LoRA (lora.apply_lora: freeze the base, wrap the target layers) or, for
                            full fine-tuning, lora.freeze (embeddings, the first N blocks)
    weights=LoRAWeights     what each save writes: ckpt.safetensors = the merged model (a plain GPT,
                            so eval, sample and report use it unchanged), and the adapter alone
                            (OUT/adapter.safetensors, kind "adapter", its base's checksum, and the
                            LoRA settings); a resume puts the base's exact weights and the step's
                            adapter back into the LoRA model, so it continues bitwise

The run folder is train's (run_folder.py) plus OUT/finetune.toml (the settings and the base
checkpoint's path and checksum, which a resume checks) and, for LoRA, one adapter per saved step
(checkpoints/step_N.adapter.safetensors; OUT/adapter.safetensors links the newest).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gptkit.chat_template import run_template
from gptkit.checkpoint import Checkpoint, describe_tokenizer, load_checkpoint, save_adapter
from gptkit.checkpoint_format import MODEL
from gptkit.config import TrainConfig
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_link, atomic_write_text
from gptkit.hf_import import load_init_checkpoint
from gptkit.finetune_config import FinetuneConfig, check_configs, finetune_toml
from gptkit.lora import apply_lora, freeze, lora_state_dict, merge_lora, parse_targets
from gptkit.monitor import Monitor
from gptkit.run_folder import CHECKPOINT_DIR, FINETUNE_RECORD, saved_steps
from gptkit.shards import read_meta
from gptkit.train import RunWeights, TrainResult, train

ADAPTER_NAME = "adapter.safetensors"
RECORD_NAME = FINETUNE_RECORD


def adapter_step_path(out: str | Path, step: int) -> Path:
    return Path(out) / CHECKPOINT_DIR / f"step_{step:06d}.adapter.safetensors"


def check_tokenizer(base: Checkpoint, meta: dict, data: str | Path, ckpt: str | Path) -> None:
    """One error when the data was tokenized otherwise than the model: both tokenizers, and the fix."""
    if meta.get("tokenizer") != base.tokenizer_spec or meta.get("vocab_size") != base.model_config.vocab_size:
        raise GptkitError(
            f"the data in {data} was tokenized with {describe_tokenizer(meta.get('tokenizer'))}, but the model in "
            f"{ckpt} uses {describe_tokenizer(base.tokenizer_spec)}",
            hint=f"tokenize the text with the model's tokenizer: `gptkit prepare text NEW --tokenizer {ckpt} --out DIR`",
        )


def batch_source(meta: dict, data: str | Path) -> str:
    """Which kind of data a folder holds (meta.json "kind"), refusing kinds fine-tuning cannot read.
    "text" (and folders from before kinds): windows of the token stream, as pretraining reads them;
    "instructions": one example per row, prompt targets masked (-100). train.train_batches builds
    the batch source for either."""
    kind = meta.get("kind", "text")
    if kind in ("text", "instructions"):
        return kind
    raise GptkitError(
        f"{data} holds data of kind {kind!r}, which this gptkit cannot fine-tune on",
        hint="prepare the data with `gptkit prepare text` or `gptkit prepare instructions`",
    )


class FullWeights(RunWeights):
    """Full fine-tuning: the module is a GPT, saved as train saves it; OUT/finetune.toml besides."""

    def __init__(self, record: str):
        self.record = record

    def saved(self, out, step, weights, train_loss, val_loss, is_best):
        atomic_write_text(Path(out) / RECORD_NAME, self.record)


class LoRAWeights(FullWeights):
    """LoRA's run folder: merged checkpoints, an adapter per step, and resume from base + adapter."""

    def __init__(self, base: Checkpoint, ft: FinetuneConfig, record: str, cfg: TrainConfig):
        super().__init__(record)
        self.base, self.ft, self.out, self.data = base, ft, Path(cfg.out), cfg.data  # data: eval's default
        self.model: torch.nn.Module | None = None  # the LoRA model, once the transform has made it
        self.chat_template = run_template(read_meta(cfg.data), base.chat_template)  # as train() records it

    def transform(self, model):
        self.model = apply_lora(model, self.ft.lora_targets, self.ft.lora_rank, self.ft.lora_alpha, self.ft.lora_dropout)
        return self.model

    def to_checkpoint(self, weights):
        return merge_lora(self.model, weights)

    def saved(self, out, step, weights, train_loss, val_loss, is_best):
        super().saved(out, step, weights, train_loss, val_loss, is_best)
        path = adapter_step_path(out, step)
        config = {"data": self.data, "lora": self.ft.lora_settings(), "finetune": self.record}
        save_adapter(path, lora_state_dict(self.model, weights), self.base, step, train_loss, val_loss, config, self.chat_template)
        atomic_link(path, Path(out) / ADAPTER_NAME)
        kept = {p.step for p in saved_steps(out)}
        for old in Path(out, CHECKPOINT_DIR).glob("step_*.adapter.safetensors"):
            if int(old.name[5:11]) not in kept:
                old.unlink(missing_ok=True)

    def resume(self, model, checkpoint):
        # The merged checkpoint cannot give back the base's exact weights (W + BA rounds), so the base
        # comes from its own file and A, B from the step's adapter.
        path = adapter_step_path(self.out, checkpoint.step)
        if not path.is_file():
            raise GptkitError(f"cannot resume the LoRA run: {path} is missing", hint="resume from another saved step with --resume-from")
        adapter = load_checkpoint(path)
        adapter.check_base(self.base, path)
        missing, unexpected = model.load_state_dict(self.base.state_dict, strict=False)
        assert not unexpected and all(k.rsplit(".", 1)[-1].startswith("lora_") for k in missing), (missing, unexpected)
        model.load_state_dict(adapter.state_dict, strict=False)


def finetune(
    ckpt: str | Path,
    ft: FinetuneConfig,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_from: int | None = None,
    monitor: Monitor | None = None,
) -> TrainResult:
    """Fine-tune the model of `ckpt` (a checkpoint, a run folder, or what hf_import reads: a Hugging
    Face GPT-2 folder or hub name) on the data folder cfg.data into the run folder cfg.out
    (see the module docstring). Raises GptkitError before starting when the checkpoint is not a full
    model, the data's tokenizer is not the model's, or a resume names another base than the run's."""
    check_configs(ft, cfg)
    if ft.lora:
        parse_targets(ft.lora_targets)  # before train() touches the run folder
    base = load_init_checkpoint(ckpt)  # a gptkit checkpoint or run folder, or Hugging Face GPT-2 weights
    if base.kind != MODEL:
        raise GptkitError(f"{ckpt} is an {base.kind}, not a full model", hint="fine-tune from a full model's checkpoint")
    meta = read_meta(cfg.data)
    check_tokenizer(base, meta, cfg.data, ckpt)
    batch_source(meta, cfg.data)
    if ft.freeze_blocks > base.model_config.n_layer:
        raise GptkitError(f"cannot freeze {ft.freeze_blocks} blocks: the model has {base.model_config.n_layer}")
    if resume or resume_from is not None:
        check_same_base(cfg.out, base, ckpt)
    record = finetune_toml(ft, cfg, {"ckpt": str(ckpt), "checksum": base.checksum})
    monitor = monitor or Monitor()

    if ft.lora:
        weights = LoRAWeights(base, ft, record, cfg)
        transforms = [weights.transform]
    else:
        weights = FullWeights(record)
        transforms = [lambda model: freeze(model, ft.freeze_embeddings, ft.freeze_blocks)]

    def report_trainable(model):
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        mode = f"LoRA rank {ft.lora_rank} on {ft.lora_targets}" if ft.lora else "full fine-tuning"
        monitor.message(f"{mode}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
        return model

    return train(
        base.model_config, cfg, resume=resume, overwrite=overwrite, resume_from=resume_from, monitor=monitor,
        init_from=ckpt, transforms=[*transforms, report_trainable], weights=weights,
    )


def check_same_base(out: str | Path, base: Checkpoint, ckpt: str | Path) -> None:
    """A resumed fine-tuning run must continue on the base it started from."""
    from gptkit.finetune_config import load_finetune_toml

    path = Path(out) / RECORD_NAME
    if not path.is_file():
        return  # train()'s checks say what is missing in `out`
    saved = load_finetune_toml(path).get("base", {})
    if saved.get("checksum") != base.checksum:
        raise GptkitError(
            f"{out} fine-tunes the model {saved.get('ckpt')} ({saved.get('checksum')}), not {ckpt} ({base.checksum})",
            hint=f"resume with --ckpt {saved.get('ckpt')}, or start a new run with --overwrite",
        )
