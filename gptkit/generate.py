"""Stage 4, `gptkit sample`: text from a checkpoint.

Autoregressive sampling: feed the prompt, turn the last position's logits into a probability
distribution, draw the next token, append it, repeat. Two knobs shape the distribution:

    temperature   logits / T before the softmax: < 1 sharper (safer), > 1 flatter (wilder);
                  0 means greedy decoding, always the most likely token
    top_k         keep only the k most likely tokens, so rare nonsense is never drawn

A KV cache (see model.KVCache) keeps the keys and values of earlier positions, so each new token costs
one position's work instead of the whole prefix. Once the text outgrows the context window, the model
sees only the last block_size tokens, and the cache is rebuilt for each new window.

sample_texts loads the model with inference.load_model, so `--dtype auto` means what it means for
eval and training: float32 on a CPU, bfloat16 (or float16 on older GPUs) autocast on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from gptkit.devices import Runtime
from gptkit.errors import GptkitError
from gptkit.chat_template import apply_template, completion_end
from gptkit.inference import LoadedModel, load_model
from gptkit.model import GPT, KVCache
from gptkit.tokenizers import Tokenizer


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """logits: (B, vocab) for the last position -> (B, 1) sampled ids."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_largest = torch.topk(logits, top_k).values[:, [-1]]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(logits.device)


@torch.no_grad()
def generate(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 200,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
    precision: torch.dtype = torch.float32,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids, one at a time (stops early at `stop_id`).

    Random draws come from `generator` (a CPU torch.Generator), so a seeded generator repeats its text.
    `precision`: the autocast dtype of the forward passes (a Runtime's dtype; float32: no autocast).
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    model.eval()
    device = next(model.parameters()).device
    block_size = model.config.block_size
    if generator is None:
        generator = torch.Generator()
        generator.seed()  # a fresh random seed
    tokens = list(prompt_ids)
    cache = None
    # Autocast is entered around each forward pass, never held across a `yield`: it is a thread-wide
    # setting, and the caller's code between two tokens must not run under it.
    autocast = Runtime(device, precision).autocast
    for _ in range(max_new_tokens):
        if cache is None or cache.length >= block_size:
            # (Re)start: run the last block_size tokens through the model, filling a fresh cache.
            cache = KVCache(model.config.n_layer)
            window = torch.tensor([tokens[-block_size:]], device=device)
        else:
            window = torch.tensor([[tokens[-1]]], device=device)  # only the newest token
        with autocast:
            logits, _ = model(window, cache=cache)
        # Only real tokens: the padded ids past vocab_size (model.py) must never be drawn.
        token = int(next_token(model.unpadded(logits[:, -1, :]), temperature, top_k, generator))
        tokens.append(token)
        yield token
        if token == stop_id:
            return


def decode_stream(tokenizer: Tokenizer, ids: Iterator[int]) -> Iterator[str]:
    """Turn a stream of ids into a stream of text pieces.

    One token can be part of a multi-byte character (byte-level BPE splits emoji and CJK across
    tokens); such a token decodes to U+FFFD alone. So ids wait until they decode cleanly.
    """
    pending: list[int] = []
    for token in ids:
        pending.append(token)
        text = tokenizer.decode(pending)
        if not text.endswith("\ufffd") or len(pending) >= 8:
            yield text
            pending = []
    if pending:
        yield tokenizer.decode(pending)


def encode_prompt(tokenizer: Tokenizer, prompt: str | None, block_size: int) -> tuple[str, list[int]]:
    """The ids to start from. No prompt starts from a newline (as nanoGPT does), or <|endoftext|>."""
    if prompt:
        ids = tokenizer.encode(prompt)
    else:
        prompt = ""
        try:
            ids = tokenizer.encode("\n")
        except GptkitError:
            ids = []
        ids = ids or ([tokenizer.eot_id] if tokenizer.eot_id is not None else [0])
    if len(ids) > block_size:
        raise GptkitError(
            f"the prompt is {len(ids):,} tokens long, longer than the model's context of {block_size:,} tokens",
            hint="shorten the prompt; the model cannot see more than its context",
        )
    return prompt, ids


def chat_prompt(loaded: LoadedModel, messages_or_question: str | list[dict], source: str | Path = "the model") -> tuple[str, str]:
    """`sample --chat`: (the text to feed the model, the text that ends its answer) for a question (or a
    conversation, chat_template.as_messages), rendered with the template the model was fine-tuned with
    (loaded.chat_template). E.g. ("Question: 2+3\\nAnswer: ", "\\n") with the default template."""
    template = loaded.chat_template
    if template is None:
        raise GptkitError(
            f"{source} has no chat template: it was not fine-tuned on instruction data, so it does not know how a question is asked",
            hint="fine-tune it on data from `gptkit prepare instructions` (gptkit finetune --data DIR), or continue a text with --prompt",
        )
    return apply_template(template, messages_or_question), completion_end(template)


def until_stop(pieces: Iterator[str], stop: str) -> Iterator[str]:
    """The text pieces up to (not including) the first occurrence of `stop`, which may span pieces.
    Text that could be the start of `stop` is held back until the next piece decides."""
    held = ""
    for piece in pieces:
        held += piece
        at = held.find(stop)
        if at >= 0:
            if at:
                yield held[:at]
            return  # the caller stops pulling: generation stops here too
        keep = next((n for n in range(min(len(stop) - 1, len(held)), 0, -1) if stop.startswith(held[-n:])), 0)
        if len(held) > keep:
            yield held[: len(held) - keep]
            held = held[len(held) - keep :]
    if held:
        yield held


def sample_texts(
    ckpt: str | Path,
    prompt: str | None = None,
    num_samples: int = 1,
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int | None = None,
    device: str = "auto",
    stop_at_eot: bool = True,
    dtype: str = "auto",
    adapter: str | Path | None = None,
    chat: bool = False,
) -> Iterator[tuple[str, Iterator[str]]]:
    """For each sample, yield (prompt text, stream of generated text pieces). Loads the checkpoint once.

    With a seed, the same call gives the same text on the same machine. chat=True: `prompt` is a
    question, rendered with the model's chat template (chat_prompt), and each sample is the answer
    alone, ending where the template ends an answer (or at <|endoftext|>).
    """
    if temperature < 0:
        raise GptkitError(f"--temperature must be >= 0 (got {temperature})")
    loaded = load_model(ckpt, device, dtype, adapter)
    stop = None
    if chat:
        prompt, stop = chat_prompt(loaded, prompt or "", adapter or ckpt)
    model, tokenizer = loaded.model, loaded.tokenizer()
    prompt_text, prompt_ids = encode_prompt(tokenizer, prompt, model.config.block_size)
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    stop_id = tokenizer.eot_id if stop_at_eot else None
    for _ in range(num_samples):
        ids = generate(model, prompt_ids, max_new_tokens, temperature, top_k, generator, stop_id, loaded.runtime.dtype)
        if stop_id is not None:
            ids = (i for i in ids if i != stop_id)
        pieces = decode_stream(tokenizer, ids)
        yield prompt_text, until_stop(pieces, stop) if stop else pieces
