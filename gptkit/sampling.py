"""Sampling controls: from one position's logits to the next token, for every row of a batch at once.

Each row (one request) has its own SamplingParams, applied in this order to the logits of real tokens:

    penalties      repetition_penalty (CTRL, Keskar et al. 2019): a token already in the text (prompt or
                   output) has its logit divided by r when positive, multiplied by r when negative;
                   frequency_penalty / presence_penalty (OpenAI): minus f x (times the token was
                   generated) minus p x (1 if it was generated at all). 1.0 / 0.0 / 0.0 turn them off.
    temperature    logits / T; 0 = greedy: the most likely token (after penalties), no draw at all
    top_k          keep the k most likely tokens
    top_p          nucleus sampling (Holtzman et al. 2019): keep the smallest set of likeliest tokens whose
                   probability adds up to top_p
    min_p          keep tokens at least min_p x the probability of the likeliest one
    draw           one uniform number u from the row's own torch.Generator, then the token where the
                   cumulative probability first passes u (inverse-CDF sampling)

A generator per row is what makes `seed` mean the same text at any batch size: a row's draws never
depend on how many other rows there are. Log-probabilities are the model's own (log-softmax of the raw
logits, before penalties and temperature), as OpenAI reports them.

TextStream turns a row's token ids into text: it holds back a partial UTF-8 character (byte-level BPE
splits emoji across tokens) and any tail that could be the start of a stop string, so a stop string
matched across token boundaries is never emitted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from gptkit.errors import GptkitError


@dataclass
class SamplingParams:
    """One request's controls (OpenAI's names where they exist)."""

    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # CTRL-style, divides positive logits of seen tokens
    frequency_penalty: float = 0.0  # OpenAI-style, minus count * f
    presence_penalty: float = 0.0  # OpenAI-style, minus p once seen
    stop: tuple[str, ...] = ()  # stop strings: matched across token boundaries, never emitted
    stop_at_eot: bool = True
    seed: int | None = None  # same seed -> same text at any batch size (a generator per row)
    logprobs: int | None = None  # None: none; 0: the chosen token's; N: plus the top-N alternatives

    def validate(self) -> None:
        """Raise GptkitError naming the first bad field."""
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_k", self.top_k is None or self.top_k >= 1, "must be >= 1 (or unset)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "must be in [0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1 = off)"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "must be in [-2, 2]"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "must be in [-2, 2]"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "must be non-empty strings"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "must be in 0..20 (or unset)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise GptkitError(f"sampling: {name} {rule} (got {getattr(self, name)!r})", hint=f"fix {name}")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


class BatchControls:
    """The sampling parameters of rows 0..B-1 as (B, 1) tensors, built when rows join or leave, so a
    decoding step creates no tensors from Python values. A row without a request (None) is greedy."""

    def __init__(self, params: list[SamplingParams | None], vocab_size: int, device: torch.device):
        live = [p for p in params if p is not None]
        self.all_greedy = all(p.temperature == 0 for p in live)
        self.penalised = any(p.penalised for p in live)
        self.top_k = any(p.top_k is not None and p.top_k < vocab_size for p in live)
        self.top_p = any(p.top_p < 1 for p in live)
        self.min_p = any(p.min_p > 0 for p in live)
        self.logprobs = max((p.logprobs for p in live if p.logprobs is not None), default=None)

        def column(get, default):
            return torch.tensor([[get(p) if p is not None else default] for p in params], dtype=torch.float32, device=device)

        self.greedy = column(lambda p: float(p.temperature == 0), 1.0).bool()  # (B, 1)
        self.temperature = column(lambda p: p.temperature or 1.0, 1.0)
        self.k = column(lambda p: min(p.top_k or vocab_size, vocab_size), vocab_size).long()
        self.p = column(lambda p: p.top_p, 1.0)
        self.min_prob = column(lambda p: p.min_p, 0.0)
        self.repetition = column(lambda p: p.repetition_penalty, 1.0)
        self.frequency = column(lambda p: p.frequency_penalty, 0.0)
        self.presence = column(lambda p: p.presence_penalty, 0.0)


def apply_penalties(logits: torch.Tensor, seen: torch.Tensor, counts: torch.Tensor, c: BatchControls) -> torch.Tensor:
    """logits (B, V); seen (B, V) bool: in the prompt or output; counts (B, V): times generated."""
    penalised = torch.where(logits > 0, logits / c.repetition, logits * c.repetition)
    logits = torch.where(seen, penalised, logits)
    return logits - c.frequency * counts - c.presence * (counts > 0)


def filtered_probs(logits: torch.Tensor, c: BatchControls) -> torch.Tensor:
    """logits (B, V) -> the probabilities to draw from (B, V): temperature, top-k, top-p, min-p."""
    logits = logits / c.temperature
    if c.top_k:
        kth = logits.sort(dim=-1, descending=True).values.gather(-1, c.k - 1)  # (B, 1): each row's k-th best
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if c.top_p:
        ranked = probs.sort(dim=-1, descending=True).values
        before = ranked.cumsum(dim=-1) - ranked  # probability of the tokens ranked above each one
        # the least likely token still kept: the mass above it is < p (so the likeliest always stays)
        smallest_kept = ranked.masked_fill(before >= c.p, 1.0).min(dim=-1, keepdim=True).values
        probs = probs.masked_fill(probs < smallest_kept, 0.0)
    if c.min_p:
        probs = probs.masked_fill(probs < c.min_prob * probs.max(dim=-1, keepdim=True).values, 0.0)
    return probs


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: probs (B, V) (need not sum to 1), uniforms (B, 1) in [0, 1) -> ids (B, 1)."""
    cdf = probs.cumsum(dim=-1)
    ids = torch.searchsorted(cdf, uniforms * cdf[:, -1:], right=True)
    return ids.clamp_(max=probs.size(-1) - 1)


def uniforms(generators: list[torch.Generator | None], device: torch.device) -> torch.Tensor:
    """One uniform number per row from the row's own generator (0.5 for a row without one): (B, 1)."""
    values = [torch.rand(1, generator=g) if g is not None else torch.full((1,), 0.5) for g in generators]
    return torch.stack(values).to(device)


def choose(
    logits: torch.Tensor, c: BatchControls, generators: list[torch.Generator | None],
    seen: torch.Tensor | None = None, counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits (B, V) float32 of real tokens -> the next id of every row (B, 1)."""
    if c.penalised:
        logits = apply_penalties(logits, seen, counts, c)
    best = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    if c.all_greedy:
        return best
    sampled = draw(filtered_probs(logits, c), uniforms(generators, logits.device))
    return torch.where(c.greedy, best, sampled)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator: seeded, or from fresh OS entropy."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class TextStream:
    """One row's ids -> its text, released only when final: not a partial UTF-8 character, not a
    possible start of a stop string. A stop string found ends the text just before it."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.text = ""  # decoded so far (a stop string cut off)
        self.released = 0  # characters of self.text handed out
        self.offset = self.read = 0  # ids[offset:read] were decoded last time: the context for the next piece
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one id; return the text this releases ('' while held back). Sets self.stopped."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        # Decode the new ids with the previous piece in front (a SentencePiece piece alone loses its space).
        before = self.tokenizer.decode(self.ids[self.offset : self.read])
        now = self.tokenizer.decode(self.ids[self.offset :])
        if now.endswith("\ufffd") and len(self.ids) - self.read < 8:
            return ""  # the middle of a multi-byte character: wait for its other bytes
        self.text += now[len(before) :]
        self.offset, self.read = self.read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more ids: release what was held back (a partial character decodes as it is)."""
        if not self.stopped and self.read < len(self.ids):
            before = self.tokenizer.decode(self.ids[self.offset : self.read])
            self.text += self.tokenizer.decode(self.ids[self.offset :])[len(before) :]
            self.read = len(self.ids)
            self._release(final=False)  # a stop string completed by the last bytes still stops
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stop and not self.stopped:
            # No stop string can begin inside released text (a tail that could begin one is held back),
            # so the search starts where the release stopped.
            found = [i for i in (self.text.find(s, self.released) for s in self.stop) if i >= 0]
            if found:
                self.text, self.stopped = self.text[: min(found)], True
        end = len(self.text)
        if self.stop and not self.stopped and not final:
            end -= self._possible_stop_start()
        piece = self.text[self.released : end]
        self.released = max(self.released, end)
        return piece

    def _possible_stop_start(self) -> int:
        """The length of the longest tail of the text that a stop string begins with."""
        tail = self.text[self.released :]
        for n in range(min(len(tail), max(len(s) for s in self.stop) - 1), 0, -1):
            if any(s.startswith(tail[-n:]) for s in self.stop):
                return n
        return 0
