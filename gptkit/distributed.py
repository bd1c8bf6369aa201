"""Training on several processes: torchrun's environment, the process group, and the model wrappers.

    torchrun --standalone --nproc-per-node 8 -m gptkit train --preset gpt2-124m --grad-accum 5

torchrun starts one process ("rank") per GPU and tells each who it is in environment variables:
RANK (0 .. WORLD_SIZE-1 over all machines), LOCAL_RANK (its index on this machine, i.e. which GPU),
WORLD_SIZE, and MASTER_ADDR / MASTER_PORT (where rank 0 waits for the others). `setup()` reads them and
joins the process group: NCCL between GPUs, gloo between CPU processes. Without torchrun (or with one
process) nothing is set up and every helper here degrades to the single-process behaviour.

Two ways to share the work (TrainConfig.parallel):

    ddp    DistributedDataParallel. Every rank holds the whole model and optimizer; each computes
           gradients on its own slice of the batch, and an all-reduce averages them during backward,
           so every rank takes the same step. The default: simplest and fastest while the model fits.
    fsdp   fully_shard ("FSDP2"). Each rank keeps 1/WORLD_SIZE of every parameter, gradient and
           optimizer moment; a block's full weights are all-gathered just before it runs and freed
           after, and gradients are reduce-scattered. For models whose training state (about 16
           bytes per parameter with AdamW) does not fit one GPU.

Either way rank 0 alone logs and writes files, and checkpoints hold plain full tensors, so a run
trained on 8 GPUs is sampled, evaluated or resumed on one process like any other.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
import torch.nn as nn

from gptkit.errors import GptkitError


def is_main_process() -> bool:
    """True except in the ranks 1.. of a torchrun launch (cheap: reads the environment only)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Distributed:
    """Who this process is. The defaults describe a single process."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # setup() created the process group, so close() destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The average of `tensor` over all ranks (every rank gets it)."""
        if not self.enabled:
            return tensor
        tensor = tensor.detach().clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is True on any: used so all ranks stop at the same step."""
        if not self.enabled:
            return flag
        tensor = torch.tensor(int(flag), device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun described, if any. Returns who we are and the device to use:
    on CUDA each rank takes the GPU of its LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise GptkitError(
                f"rank {rank} wants GPU {local_rank}, but this machine has {torch.cuda.device_count()}",
                hint="start at most one process per GPU: torchrun --nproc-per-node N with N <= the GPU count",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise GptkitError(f"distributed training runs on CUDA GPUs or CPUs, not {device.type}", hint="use --device cuda or cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    if dist.get_backend() == "gloo":
        global _gloo_threads_started
        _gloo_threads_started = True
    return Distributed(rank, local_rank, world_size, owns_group=owns), device


# Set once this process joins a gloo group; see exit_process.
_gloo_threads_started = False


def needs_hard_exit() -> bool:
    """True in a process whose gloo worker threads may outlive its process group (see exit_process)."""
    return _gloo_threads_started


def exit_process(code: int) -> NoReturn:
    """End this process now with `code`, skipping the interpreter's shutdown. For torchrun workers
    that used gloo, where a normal exit can abort the process after a finished run.

    Why: DDP (which imports torch._dynamo after the group exists) and FSDP2 (whose DTensor caches hold
    the device mesh) keep references to the gloo group, so destroy_process_group() cannot free it and
    its worker threads live on. If one of them drops the last reference to a Python-owned tensor
    while the interpreter shuts down, it needs the GIL; Python ends the thread instead, and the
    unwinding aborts the process ("terminate called without an active exception", SIGABRT), so torchrun
    reports a failure. Measured here, under CPU load: of 30 launches of all-reduce-then-exit with the
    group kept alive, 7 crashed; of 30 ending with exit_process, none. os._exit never shuts the
    interpreter down; train() has closed every file by then, so flushing stdout and stderr is all that
    is left to do.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`... | head`) or a closed stream: nothing to save
            pass
    os._exit(code)


def wrap_model(model: nn.Module, ctx: Distributed, parallel: str, compute_dtype: torch.dtype) -> nn.Module:
    """The module the training loop calls: `model` itself on one process, else wrapped by DDP or
    sharded in place by fully_shard. `model` stays the plain GPT for its config and parameters."""
    if not ctx.enabled:
        return model
    device = next(model.parameters()).device
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # The constructor broadcasts rank 0's weights, so all ranks start from the same model.
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16 all-gathers halve the traffic; gradients are reduced in fp32 so their sum keeps its precision.
        if compute_dtype == torch.bfloat16:
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        else:
            policy = MixedPrecisionPolicy()
        # One unit per block: only one block's full weights (plus the next, prefetched) exist at a time.
        # The root unit holds the rest: the embeddings, which the output layer shares, and the last norm.
        for block in model.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    raise ValueError(f"unknown parallel mode {parallel!r} (known: ddp, fsdp)")


@contextmanager
def gradient_sync(module: nn.Module, sync: bool):
    """Around one micro-batch's forward and backward: when `sync` is False (all micro-batches but the
    last of a step), skip the gradient all-reduce and let gradients accumulate locally, so a step of
    grad_accum micro-batches communicates once, not grad_accum times."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        with module.no_sync() if not sync else nullcontext():
            yield
    elif _is_fsdp(module):
        module.set_requires_gradient_sync(sync)  # FSDP2: skip the reduce-scatter, keep full gradients
        yield
    else:
        yield


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: the shard of an FSDP parameter (a DTensor), else the tensor."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (e.g. FSDP's replicated gradient norm), else the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


# ---------------------------------------------------------------------------------------------------
# Full (unsharded) states for checkpoints. Under FSDP these are collectives: every rank must call
# them; rank 0 receives the full tensors on the CPU, the other ranks an empty dict.

_FULL = dict(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    if not _is_fsdp(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(**_FULL))


def _optimizers(optimizer) -> list:
    return list(getattr(optimizer, "optimizers", [optimizer]))  # optim.CombinedOptimizer holds several


def _parameter_order(model: nn.Module, optimizer) -> list[str]:
    """Parameter names in the order an optimizer's state_dict numbers its parameters."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer's state_dict with full tensors, numbered as a single-process optimizer numbers
    them, whatever the parallelism: resume files do not depend on how the run was launched."""
    if not _is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, _optimizers(optimizer), options=StateDictOptions(**_FULL))
    if not by_name:  # ranks other than 0
        return {}
    # torch keys this state by parameter name; number it instead, like optimizer.state_dict() does.
    index = {name: i for i, name in enumerate(_parameter_order(model, optimizer))}
    return {
        "state": {index[name]: state for name, state in by_name["state"].items()},
        "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in by_name["param_groups"]],
    }


def load_optimizer_state(model: nn.Module, optimizer, state_dict: dict) -> None:
    """Load a full, numbered optimizer state (from any run) into this run's optimizer (sharding it under FSDP)."""
    check_optimizer_state_fits(model, optimizer, state_dict)
    if not _is_fsdp(model):
        optimizer.load_state_dict(state_dict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _parameter_order(model, optimizer)
    by_name = {
        "state": {names[int(i)]: state for i, state in state_dict["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state_dict["param_groups"]],
    }
    set_optimizer_state_dict(model, _optimizers(optimizer), by_name, options=StateDictOptions(full_state_dict=True))


def check_optimizer_state_fits(model: nn.Module, optimizer, state_dict: dict) -> None:
    """Refuse a saved optimizer state whose moments are not shaped like this model's parameters (a resume
    file's metadata decides nothing here: the sizes come from the parameters), before torch would fail
    mid-step with a shape error."""
    from gptkit.errors import GptkitError

    names = {id(p): name for name, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, moments in state_dict.get("state", {}).items():
        index = int(index)
        if index >= len(params):
            raise GptkitError(
                f"the resume state has optimizer moments for parameter {index}, but the model has {len(params)}",
                hint="the resume state belongs to another model; resume from a step this run saved",
            )
        shape = tuple(params[index].shape)  # under FSDP a DTensor: its full, logical shape
        for key, value in moments.items():
            if hasattr(value, "dim") and value.dim() > 0 and tuple(value.shape) != shape:
                raise GptkitError(
                    f"the resume state's {key} for {names.get(id(params[index]), f'parameter {index}')} is "
                    f"{tuple(value.shape)}, but the parameter is {shape}",
                    hint="the resume state belongs to another model; resume from a step this run saved",
                )
