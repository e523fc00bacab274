"""Multi-batch token-id traces for ``hybatch bench cache-trace``: what arrives in each batch, seeded.

Each workload is a frozen parameter set whose ``build(seed)`` returns a ``Trace``: batches in arrival
order, each a tuple of requests (an account's cache salt + prompt token ids). No model and no text:
token ids are drawn uniformly from ``[1, vocab_size)`` so that two prompts share a block only where a
workload means them to. Lengths are ``(lo, hi)`` ranges drawn uniformly, both ends included.

    system prompt    one long instruction block shared by every request of every batch
    documents        each document asked several questions, the questions spread over later batches
    conversations    each turn's prompt = the previous prompt + the reply + a new user message
    unshared         nothing in common (pressure on the cache, and the cost of caching nothing)
    mix              all four on one timeline: batch b holds batch b of each
"""

from __future__ import annotations

import random
from dataclasses import dataclass

VOCAB_SIZE = 152576  # MiMo-V2's vocabulary; ids are drawn from [1, VOCAB_SIZE)


@dataclass(frozen=True)
class TraceRequest:
    salt: str  # the account: cache entries are shared only between equal salts
    token_ids: tuple[int, ...]
    # Token offsets where chat messages end, as the worker passes them for a chat request (our
    # cache plans windows there; the peers ignore them). Empty for a plain completion prompt.
    message_ends: tuple[int, ...] = ()

    @property
    def prompt_len(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Trace:
    name: str
    batches: tuple[tuple[TraceRequest, ...], ...]

    @property
    def num_requests(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_len for b in self.batches for r in b)


def _tokens(rng: random.Random, length_range: tuple[int, int]) -> tuple[int, ...]:
    return tuple(rng.randrange(1, VOCAB_SIZE) for _ in range(rng.randint(*length_range)))


def _trace(name: str, num_batches: int, arrivals: list[tuple[int, TraceRequest]]) -> Trace:
    batches: list[list[TraceRequest]] = [[] for _ in range(num_batches)]
    for batch, request in arrivals:
        batches[batch].append(request)
    return Trace(name, tuple(tuple(b) for b in batches))


@dataclass(frozen=True)
class SystemPromptWorkload:
    """One system prompt over many batches: ``system_len`` shared tokens + a unique question each,
    as chat requests (a system message, then a user message)."""

    num_batches: int = 24
    requests_per_batch: int = 16
    system_len: int = 2048
    question_len: tuple[int, int] = (64, 256)
    name: str = "system-prompt"

    def build(self, seed: int) -> Trace:
        rng = random.Random(f"{seed}:{self.name}")
        system = _tokens(rng, (self.system_len, self.system_len))
        arrivals = [
            (b, TraceRequest("acct-system", system + _tokens(rng, self.question_len), (len(system),)))
            for b in range(self.num_batches)
            for _ in range(self.requests_per_batch)
        ]
        return _trace(self.name, self.num_batches, arrivals)


@dataclass(frozen=True)
class DocumentWorkload:
    """``num_documents`` documents (4 accounts), each asked ``questions_per_document`` questions: the
    first at a random batch, each next one ``gap_batches`` later (every question lands in the trace).
    Plain completion prompts (document + question, no message boundary): the later question parts
    from the earlier one at a point nothing marks."""

    num_batches: int = 24
    num_documents: int = 48
    document_len: tuple[int, int] = (2048, 6144)
    questions_per_document: int = 4
    question_len: tuple[int, int] = (32, 128)
    gap_batches: tuple[int, int] = (1, 4)
    name: str = "documents"

    def build(self, seed: int) -> Trace:
        rng = random.Random(f"{seed}:{self.name}")
        span = (self.questions_per_document - 1) * self.gap_batches[1]
        if span >= self.num_batches:
            raise ValueError(f"{self.name}: the questions of one document span more than the trace")
        arrivals = []
        for d in range(self.num_documents):
            document = _tokens(rng, self.document_len)
            batch = rng.randint(0, self.num_batches - 1 - span)
            for q in range(self.questions_per_document):
                if q:
                    batch += rng.randint(*self.gap_batches)
                prompt = document + _tokens(rng, self.question_len)
                arrivals.append((batch, TraceRequest(f"acct-docs-{d % 4}", prompt)))
        return _trace(self.name, self.num_batches, arrivals)


@dataclass(frozen=True)
class ConversationWorkload:
    """``num_conversations`` chats of ``turns`` turns, one account each: turn 1 is a system prompt and
    a user message, turn k + 1 repeats turn k's prompt, its reply and a new user message; turns
    arrive ``gap_batches`` apart. Every message's end is a message boundary."""

    num_batches: int = 24
    num_conversations: int = 32
    turns: int = 6
    system_len: tuple[int, int] = (256, 1024)
    message_len: tuple[int, int] = (32, 256)
    reply_len: tuple[int, int] = (64, 512)
    gap_batches: tuple[int, int] = (1, 3)
    name: str = "conversations"

    def build(self, seed: int) -> Trace:
        rng = random.Random(f"{seed}:{self.name}")
        span = (self.turns - 1) * self.gap_batches[1]
        if span >= self.num_batches:
            raise ValueError(f"{self.name}: the turns of one conversation span more than the trace")
        arrivals = []
        for c in range(self.num_conversations):
            system = _tokens(rng, self.system_len)
            prompt = system + _tokens(rng, self.message_len)
            ends = [len(system), len(prompt)]
            batch = rng.randint(0, self.num_batches - 1 - span)
            for turn in range(self.turns):
                if turn:
                    batch += rng.randint(*self.gap_batches)
                    prompt = prompt + _tokens(rng, self.reply_len)
                    ends.append(len(prompt))
                    prompt = prompt + _tokens(rng, self.message_len)
                    ends.append(len(prompt))
                arrivals.append((batch, TraceRequest(f"acct-chat-{c}", prompt, tuple(ends))))
        return _trace(self.name, self.num_batches, arrivals)


@dataclass(frozen=True)
class UnsharedWorkload:
    """``requests_per_batch`` prompts per batch with nothing in common, one account each."""

    num_batches: int = 24
    requests_per_batch: int = 16
    prompt_len: tuple[int, int] = (512, 2048)
    name: str = "unshared"

    def build(self, seed: int) -> Trace:
        rng = random.Random(f"{seed}:{self.name}")
        arrivals = [
            (b, TraceRequest(f"acct-u-{b}-{i}", _tokens(rng, self.prompt_len)))
            for b in range(self.num_batches)
            for i in range(self.requests_per_batch)
        ]
        return _trace(self.name, self.num_batches, arrivals)


Workload = SystemPromptWorkload | DocumentWorkload | ConversationWorkload | UnsharedWorkload


def mix(traces: list[Trace], name: str = "mix") -> Trace:
    """One timeline: batch b of the mix is batch b of every trace, in the order given."""
    num_batches = max(len(t.batches) for t in traces)
    batches = tuple(
        tuple(r for t in traces if b < len(t.batches) for r in t.batches[b]) for b in range(num_batches)
    )
    return Trace(name, batches)


def default_workloads(scale: float = 1.0) -> list[Workload]:
    """The four workloads of docs/performance.md; ``scale`` multiplies their request counts."""

    def n(count: int) -> int:
        return max(1, round(count * scale))

    return [
        SystemPromptWorkload(requests_per_batch=n(16)),
        DocumentWorkload(num_documents=n(48)),
        ConversationWorkload(num_conversations=n(32)),
        UnsharedWorkload(requests_per_batch=n(16)),
    ]
