"""Distributed training on this CPU machine: torchrun with the gloo backend, 2 processes, tiny models.

The invariant behind every test: 2 ranks with batch B train on exactly the windows 1 process with
batch 2B trains on (each rank takes its half of every global micro-batch), and DDP/FSDP average the
two halves' gradients, so both runs take the same steps up to float rounding.

Every launch runs under a timeout in its own process group, killed whole if it hangs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import TINY_MODEL, subprocess_env, tiny_configs
from gptkit.checkpoint import load_checkpoint, load_resume_state
from gptkit.launch import resume_config
from gptkit.run_folder import saved_steps
from gptkit.train import train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")

LAUNCH_TIMEOUT = 180  # seconds; a healthy 2-process launch here takes about 10


def tiny_args(data, out, **train) -> list[str]:
    """`gptkit train` options for exactly the run tiny_configs(data, out, **train) describes: its
    resolved config as a TOML file (no preset), so the CLI run and the in-process one match."""
    from gptkit.config import to_toml

    path = Path(out).with_name(Path(out).name + ".toml")
    path.write_text(to_toml(*tiny_configs(data, out, **train)))
    return ["--config", str(path)]


def launch(launcher: list[str], args: list[str]) -> subprocess.Popen:
    """`torchrun LAUNCHER -m gptkit ARGS` in its own process group."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "gptkit", *args]
    return subprocess.Popen(
        cmd, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )


def finish(procs: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    """Wait for torchrun launches, all killed (with the ranks they started) after LAUNCH_TIMEOUT."""
    try:
        outputs = [proc.communicate(timeout=LAUNCH_TIMEOUT) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT} s:\n{procs[-1].communicate()[1][-3000:]}")
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{stderr[-4000:]}"
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m gptkit ARGS`."""
    return finish([launch(["--standalone", f"--nproc-per-node={nproc}"], args)])[0]


def assert_same_weights(a, b, atol=2e-5):
    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.allclose(sa[name], sb[name], rtol=1e-4, atol=atol), f"{name} differs by {(sa[name] - sb[name]).abs().max()}"


@pytest.mark.parametrize(
    "parallel, sampler, optimizer",
    [("ddp", "random", "adamw"), ("fsdp", "epoch", "muon")],
)
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, tiny_data, parallel, sampler, optimizer):
    steps = dict(max_iters=6, eval_interval=3, grad_accum=2, sampler=sampler, optimizer=optimizer)
    # one process, batch 8 x grad_accum 2
    single = tmp_path / "single"
    train(*tiny_configs(tiny_data, single, **{**steps, "batch_size": 8, "warmup_iters": 2}))
    # two processes, batch 4 each x grad_accum 2: the same 16 sequences per step
    double = tmp_path / "double"
    run = torchrun(["train", *tiny_args(tiny_data, double, batch_size=4, warmup_iters=2, parallel=parallel, **steps)])

    assert_same_weights(single / "ckpt.safetensors", double / "ckpt.safetensors")
    # the optimizer state (gathered to rank 0 under FSDP) is numbered and shaped like one process's
    opt_single, step_single, _, extra_single = load_resume_state(saved_steps(single)[0].state)
    opt_double, step_double, _, extra_double = load_resume_state(saved_steps(double)[0].state)
    assert step_single == step_double == 6
    assert opt_single["state"].keys() == opt_double["state"].keys()
    for i, state in opt_single["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.allclose(value, opt_double["state"][i][key], rtol=1e-3, atol=1e-6), (i, key)
    assert extra_single.get("loader") == extra_double.get("loader")
    # rank 0 alone talks and writes: one checkpoint path on stdout, one record per event in metrics.jsonl
    assert run.stdout.strip() == str(double / "ckpt.safetensors")
    assert run.stderr.count("gptkit 0") == 1 and run.stderr.count("eval      6") == 1
    assert "global batch = 4 x grad_accum 2 x 2 = 16 sequences" in run.stderr
    records = (double / "metrics.jsonl").read_text().splitlines()
    assert len(records) == len((single / "metrics.jsonl").read_text().splitlines())


def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path, tiny_data):
    common = dict(eval_interval=4, grad_accum=1, sampler="epoch")
    # reference: one process straight to step 8
    straight = tmp_path / "straight"
    train(*tiny_configs(tiny_data, straight, max_iters=8, batch_size=8, warmup_iters=2, **common))
    # two processes to step 4, then one process (batch 8 = the same global batch) from 4 to 8
    run = tmp_path / "run"
    torchrun(["train", *tiny_args(tiny_data, run, max_iters=4, lr_decay_iters=8, batch_size=4, warmup_iters=2, **common)])
    assert load_checkpoint(run / "ckpt.safetensors").step == 4
    model_config, cfg = resume_config(run, {"max_iters": 8, "batch_size": 8})
    assert cfg.lr_decay_iters == 8 and cfg.sampler == "epoch"
    result = train(model_config, cfg, resume=True)
    assert result.step == 8
    assert_same_weights(straight / "ckpt.safetensors", run / "ckpt.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_allreduces(rank: int, world_size: int, port: int, grad_accum: int, results) -> None:
    """One rank of the no_sync test: run one step of `grad_accum` micro-batches through DDP and count
    the gradient all-reduces (a DDP comm hook sees each bucket it would all-reduce)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from gptkit import distributed
    from gptkit.model import GPT, ModelConfig

    torch.set_num_threads(1)
    # what torchrun would set, so distributed.setup() joins the group as it does under torchrun
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert not distributed.needs_hard_exit()
    ctx, _ = distributed.setup(torch.device("cpu"))
    assert distributed.needs_hard_exit()  # a gloo group: the process must end with exit_process
    try:
        model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
        wrapped = distributed.wrap_model(model, ctx, "ddp", torch.float32)
        calls = []

        def counting_hook(state, bucket):
            calls.append(1)
            return allreduce_hook(state, bucket)

        wrapped.register_comm_hook(None, counting_hook)
        for micro_step in range(grad_accum):
            with distributed.gradient_sync(wrapped, micro_step == grad_accum - 1):
                x = torch.randint(20, (2, 8))
                _, loss = wrapped(x, x)
                loss.backward()
            if micro_step < grad_accum - 1:
                assert len(calls) == 0  # no communication before the last micro-batch
        results[rank] = len(calls)
    finally:
        ctx.close()
    distributed.exit_process(0)  # DDP keeps the gloo group alive, so a normal exit could abort (SIGABRT)


def test_gradient_accumulation_all_reduces_once_per_step():
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    context = mp.spawn(_count_allreduces, args=(2, _free_port(), 3, results), nprocs=2, join=False)
    for process in context.processes:
        process.join(LAUNCH_TIMEOUT)
    alive = [p for p in context.processes if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung"
    assert all(p.exitcode == 0 for p in context.processes)
    # every bucket was all-reduced exactly once, after the last of the 3 micro-batches
    assert results[0] == results[1] >= 1
    buckets = results[0]
    assert buckets < 3  # a tiny model fits one or two 25 MB buckets: 3 micro-batches did not triple it


def test_exit_process_flushes_what_is_buffered_and_keeps_the_exit_code():
    """exit_process skips the interpreter's shutdown (os._exit), which would otherwise flush stdout:
    a pipe's stdout is block-buffered, so the data line is lost unless exit_process flushes it."""
    script = "import sys; from gptkit import distributed; print('data'); print('log', file=sys.stderr); distributed.exit_process(3)"
    proc = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "data\n", "log\n")


@pytest.mark.parametrize("gloo", [True, False])
def test_the_cli_ends_a_gloo_process_with_exit_process(run_cli, monkeypatch, tiny_data, gloo):
    from gptkit import distributed

    exits = []

    def fake_exit_process(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(distributed, "exit_process", fake_exit_process)
    monkeypatch.setattr(distributed, "_gloo_threads_started", gloo)
    assert run_cli("eval", "--ckpt", tiny_data / "missing.safetensors").code == 1
    assert exits == ([1] if gloo else [])


@pytest.mark.parametrize("rendezvous", ["node-rank", "c10d"])
def test_two_machines_train_like_one_process(tmp_path, tiny_data, rendezvous):
    """docs/distributed.md's multi-node commands, with two "machines" on this one: each launch is one
    node of one process, they meet at 127.0.0.1, and --out is shared as it would be on NFS."""
    steps = dict(max_iters=4, eval_interval=4, grad_accum=1, warmup_iters=2)
    single = tmp_path / "single"
    train(*tiny_configs(tiny_data, single, batch_size=8, **steps))
    both = tmp_path / "both"
    args = ["train", *tiny_args(tiny_data, both, batch_size=4, **steps)]
    port = _free_port()
    if rendezvous == "node-rank":  # the machines numbered by hand, rank 0's address given
        nodes = [["--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}", "--master-addr=127.0.0.1",
                  f"--master-port={port}"] for rank in (0, 1)]
    else:  # torchrun's rendezvous numbers them: the same command on both
        nodes = [["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                  "--rdzv-id=gptkit-test"]] * 2
    runs = finish([launch(node, args) for node in nodes])

    assert_same_weights(single / "ckpt.safetensors", both / "ckpt.safetensors")
    # exactly one process in the job printed the checkpoint and the run's log
    assert sorted(run.stdout.strip() for run in runs) == ["", str(both / "ckpt.safetensors")]
    assert sum(run.stderr.count("global batch = 4 x grad_accum 1 x 2 = 8 sequences") for run in runs) == 1
