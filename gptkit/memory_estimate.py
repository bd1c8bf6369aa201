"""How much memory one training step needs, estimated without memory, and measured for real.

    estimate = estimate_training_memory(config, batch_size=12, block_size=64, dtype="float32", optimizer="adamw")
    estimate.peak_bytes, estimate.weights_bytes, estimate.activation_bytes_by_component
    measured = measure_training_memory(config, 12, 64)      # the same step on the CPU, really allocated

A step holds four kinds of tensors (N = parameters, every weight float32 as devices.py keeps them):

    weights            4 N bytes
    gradients          4 N bytes (one per trainable weight, the weights' dtype)
    optimizer state    AdamW: two moments per weight, 8 N bytes (+ one step counter per tensor)
                       Muon: one momentum buffer per hidden matrix (4 bytes per weight), AdamW for the rest
    activations        what autograd saves in the forward pass to compute the backward pass: every
                       layer's inputs to its matmuls, norms and nonlinearities, attention's output and
                       log-sum-exp, the logits. Grows with batch x context (and the autocast dtype).

Their sum is the usual back-of-the-envelope figure. The real peak differs from it: the gradients are
allocated while the activations are being freed (the backward pass walks the layers in reverse), and
every op needs room for its output while its inputs still live. So the estimate of the PEAK is not a
formula but a simulation: the real step (the model, `optim.make_optimizer`, autocast, forward,
backward, gradient clipping, the optimizer's step, twice so that the optimizer state exists) runs on
FakeTensors, torch's tensors that have a shape, a dtype and a device but no memory, and a dispatch mode
adds up the bytes of every tensor's storage while it lives. Nothing is allocated, so a 124M-parameter
model's step is estimated in seconds on a laptop, and the numbers come from the model's own modules:
a new component (another norm, grouped-query attention) is counted without a new formula.

The measurement (`measure_training_memory`, what the test compares the estimate with) runs the same
step for real on the CPU under torch.profiler with profile_memory=True. c10's CPU allocator then
reports every allocation and free with its running total of allocated bytes; the peak of that total
over the step (minus the total before it began) is the measured peak. Why not the process's RSS: the
C allocator keeps freed pages, other threads allocate, and the page cache and Python's own heap move
it by megabytes, so RSS deltas are noisy; the allocator's own count is exact and repeatable.
(A note on that count: c10 forgets a tensor freed after profiling stopped without subtracting it, so
the running total drifts between profiling sessions; the baseline is taken inside each session.)
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from gptkit.config import ModelConfig, TrainConfig
from gptkit.devices import DTYPES
from gptkit.errors import UsageError
from gptkit.model import GPT

# The parts inspect counts a model by (not model.COMPONENTS, the table of swappable classes).
MODEL_PARTS = ("embeddings", "attention", "mlp", "norms", "output", "other")


def component_of(path: str, module: nn.Module | None = None) -> str:
    """Which part of the model the module at `path` (e.g. "blocks.3.attn.qkv") belongs to, read from
    its name and type: any norm is a norm (QK-norm too), anything under an `attn` or `mlp` is that,
    the embeddings and lm_head are themselves; the model itself (the logits and loss) is the output."""
    if module is not None and (isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith("Norm")):
        return "norms"
    parts = path.split(".") if path else []
    if "attn" in parts:
        return "attention"
    if "mlp" in parts:
        return "mlp"
    if not parts or parts[0] == "lm_head":
        return "output"
    if isinstance(module, nn.Embedding) or parts[0] in ("token_embedding", "position_embedding"):
        return "embeddings"
    return "other"


@dataclass
class MemoryEstimate:
    batch_size: int
    block_size: int
    dtype: str
    optimizer: str
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # saved for backward, over the whole forward pass
    activation_bytes_by_component: dict[str, int] = field(default_factory=dict)
    peak_bytes: int = 0  # the simulated step's peak of live bytes

    @property
    def sum_bytes(self) -> int:
        """weights + gradients + optimizer state + activations: the back-of-the-envelope total."""
        return self.weights_bytes + self.gradients_bytes + self.optimizer_bytes + self.activation_bytes

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size, "block_size": self.block_size, "dtype": self.dtype, "optimizer": self.optimizer,
            "weights_bytes": self.weights_bytes, "gradients_bytes": self.gradients_bytes,
            "optimizer_bytes": self.optimizer_bytes, "activation_bytes": self.activation_bytes,
            "activation_bytes_by_component": self.activation_bytes_by_component,
            "sum_bytes": self.sum_bytes, "peak_bytes": self.peak_bytes,
        }


class LiveBytes(TorchDispatchMode):
    """Adds up the storage bytes of every tensor an op returns, for as long as some tensor on that storage
    lives (views share their base's storage: counted once). `peak` is the most ever live at once."""

    def __init__(self):
        super().__init__()
        self.size: dict[int, int] = {}  # storage id -> bytes
        self.holders: dict[int, int] = {}  # storage id -> live tensors on it
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._hold(t)
        return out

    def _hold(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata  # the C++ storage's address: the same for every view of it
        if key not in self.size:
            self.size[key], self.holders[key] = storage.nbytes(), 0
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self.holders[key] += 1
        weakref.finalize(t, self._release, key)  # fires when the tensor itself is freed (not just its Python name)

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            self.live -= self.size.pop(key)
            del self.holders[key]


class SavedActivations:
    """While active, records what autograd saves for backward, by the component running when it is saved
    (module hooks keep the stack of running modules). Parameters (saved by every matmul) are not
    activations and are left out; a storage is counted once however many views of it are saved."""

    def __init__(self, model: nn.Module):
        self.by_component = {name: 0 for name in MODEL_PARTS}
        self._seen: set[int] = set()
        self._params = {p.untyped_storage()._cdata for p in model.parameters()}
        self._stack: list[str] = []
        self._handles = []
        for path, module in model.named_modules():
            kind = component_of(path, module)
            self._handles.append(module.register_forward_pre_hook(self._entering(kind)))
            self._handles.append(module.register_forward_hook(self._leaving))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _entering(self, kind: str):
        def hook(module, args) -> None:
            self._stack.append(kind)

        return hook

    def _leaving(self, module, args, output) -> None:  # returns None: the module's output stays as it is
        self._stack.pop()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in self._params and key not in self._seen:
            self._seen.add(key)
            self.by_component[self._stack[-1] if self._stack else "output"] += t.untyped_storage().nbytes()
        return t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()


def _check(config: ModelConfig, batch_size: int, block_size: int | None, dtype: str, optimizer: str) -> int:
    block_size = block_size or config.block_size
    if batch_size < 1 or block_size < 1:
        raise UsageError(f"batch size and context must be at least 1 (got {batch_size} and {block_size})")
    if block_size > config.block_size:
        raise UsageError(
            f"a context of {block_size} tokens is longer than the model's block_size {config.block_size}",
            hint="pass a smaller --block-size, or a config with a larger block_size",
        )
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", hint=f"use {', '.join(DTYPES)}")
    if optimizer not in ("adamw", "muon"):
        raise UsageError(f"unknown optimizer {optimizer!r}", hint="use adamw or muon")
    return block_size


def _training_steps(config: ModelConfig, batch_size: int, block_size: int, dtype: str, optimizer: str, steps: int = 2, record: bool = False):
    """What train_step does, on whatever tensors the surrounding mode makes: build the model and its
    optimizer, then `steps` x (autocast forward, backward, clip, optimizer step, zero_grad). Two steps:
    the optimizer creates its state in the first, so the second is the steady state. Returns the model,
    the optimizer and (record=True) the first forward pass's SavedActivations."""
    from gptkit.optim import make_optimizer

    torch.manual_seed(0)
    model = GPT(config).train()
    opt = make_optimizer(model, replace(TrainConfig(), optimizer=optimizer), torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=DTYPES[dtype], enabled=dtype != "float32")
    saved = SavedActivations(model) if record else None
    for step in range(steps):
        x = torch.randint(0, config.vocab_size, (batch_size, block_size))
        y = torch.randint(0, config.vocab_size, (batch_size, block_size))
        with saved if saved is not None and step == 0 else nullcontext(), autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        del x, y, loss
    return model, opt, saved


def _bytes(tensors) -> int:
    """The bytes of the storages under `tensors`, each storage once."""
    return sum(t.untyped_storage().nbytes() for t in {t.untyped_storage()._cdata: t for t in tensors}.values())


def estimate_training_memory(
    config: ModelConfig, batch_size: int, block_size: int | None = None, dtype: str = "float32", optimizer: str = "adamw"
) -> MemoryEstimate:
    """The memory of one training step of `config` on the CPU, estimated on FakeTensors (see the module
    docstring): nothing is allocated, whatever the model's size."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    block_size = _check(config, batch_size, block_size, dtype, optimizer)
    live = LiveBytes()
    with FakeTensorMode(), live:
        model, opt, saved = _training_steps(config, batch_size, block_size, dtype, optimizer, record=True)
    params = list(model.parameters())
    state = [v for s in _optimizer_states(opt) for v in s.values() if isinstance(v, torch.Tensor)]
    return MemoryEstimate(
        batch_size, block_size, dtype, optimizer,
        weights_bytes=_bytes(params),
        gradients_bytes=_bytes([p for p in params if p.requires_grad]),  # a gradient per trainable weight, its dtype
        optimizer_bytes=_bytes(state),
        activation_bytes=sum(saved.by_component.values()),
        activation_bytes_by_component=dict(saved.by_component),
        peak_bytes=live.peak,
    )


def _optimizer_states(opt) -> list[dict]:
    optimizers = getattr(opt, "optimizers", (opt,))  # optim.CombinedOptimizer: Muon + AdamW
    return [state for o in optimizers for state in o.state.values()]


def measure_training_memory(
    config: ModelConfig, batch_size: int, block_size: int | None = None, dtype: str = "float32", optimizer: str = "adamw"
) -> int:
    """The peak bytes that the CPU allocator really holds during the same two steps (built inside the
    measurement, so the weights count too): torch.profiler's memory events, see the module docstring."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    block_size = _check(config, batch_size, block_size, dtype, optimizer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _training_steps(config, batch_size, block_size, dtype, optimizer)
    allocations = []
    events = list(prof.profiler.kineto_results.experimental_event_tree())
    while events:
        event = events.pop()
        if event.tag == _EventType.Allocation:  # every allocation runs on the CPU here
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.total_allocated))
        events.extend(event.children)
    if not allocations:
        return 0
    allocations.sort()
    _, first_size, first_total = allocations[0]
    baseline = first_total - first_size  # what the allocator counted before the first allocation of the step
    return max(total for _, _, total in allocations) - baseline
