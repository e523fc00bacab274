"""``bench cache-trace`` end to end on a tiny trace: workloads, our engine-driven cache, the report."""

import subprocess
import sys

from worker.bench import cache_trace
from worker.bench.cache_trace_memory import GB, Budget, pro_kv_bytes
from worker.bench.cache_trace_ours import OurCache
from worker.bench.cache_trace_workloads import (
    ConversationWorkload,
    DocumentWorkload,
    SystemPromptWorkload,
    TraceRequest,
    UnsharedWorkload,
    default_workloads,
    mix,
)
from worker.kv_cache.radix import WindowKind

KV = pro_kv_bytes(16)
ROOMY = Budget(4 * GB, 4 * GB)


def test_pro_shape_bytes_per_token():
    # 10 full layers x 8 KV heads x (192 + 128) x 2 B; 60 SWA layers x 16 heads x the same.
    assert KV.full_block_bytes == 16 * 10 * 8 * 320 * 2
    assert KV.swa_block_bytes == 16 * 60 * 16 * 320 * 2
    assert KV.window == 128


def test_budget_parse():
    assert Budget.parse("4+0.5", 2048, 16) == Budget(4 * GB, GB // 2)
    for bad in ("0+1", "x+1", "x", "4+"):
        try:
            Budget.parse(bad, 2048, 16)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} parsed")


def test_a_total_budget_is_split_as_the_engine_splits_it():
    # Half of 20 GB by bytes for the SWA pool, in whole SWA blocks (16 tokens x 614,400 B each);
    # the full pool gets the rest: the engine's DEFAULT_SWA_SHARE on the Pro shape.
    budget = Budget.parse("20", 2048, 16)
    swa_block = 16 * 614_400
    assert budget.swa_bytes == (10 * GB // swa_block) * swa_block
    assert budget.full_bytes == 20 * GB - budget.swa_bytes
    assert budget.split_by_engine and budget.label == "20 GB (10+10)"


def test_our_cache_hits_a_system_prompt_from_an_earlier_batch():
    system = tuple(range(1, 65))  # 4 blocks
    ours = OurCache(KV, ROOMY, chunk_tokens=2048)
    first = ours.serve_batch((TraceRequest("a", system + (900,) * 10),))
    second = ours.serve_batch((TraceRequest("a", system + (901,) * 10), TraceRequest("b", system + (902,))))
    # The window retained at the first prompt's end (its last full block ends at token 64) serves
    # the second batch's prompt under the same salt; the other account's shares nothing.
    assert (first, second) == (0, 64)
    assert ours.holding().cached_tokens == 2 * 64  # the system prompt's 4 blocks under each salt


def test_our_cache_hits_a_prefix_shared_within_a_batch():
    shared = tuple(range(1, 65))
    batch = (TraceRequest("a", shared + (900,) * 40), TraceRequest("a", shared + (901,) * 40))
    # One engine call, planned: the branch point (token 64) keeps a window, so the second prompt
    # resumes there; neither prompt's end (token 96) is shared.
    assert OurCache(KV, ROOMY, chunk_tokens=2048).serve_batch(batch) == 64


def test_our_cache_keeps_message_windows_as_the_worker_does():
    # A chat request's message ends go to the engine as message boundaries (as LLM passes them),
    # not as planned points: windows there are dropped before the planned ones.
    ours = OurCache(KV, ROOMY, chunk_tokens=2048)
    ours.serve_batch((TraceRequest("a", tuple(range(1, 100)), (40, 70)),))
    kinds = {n.end_token: n.window_kind for n in ours.engine.cache.tree.nodes() if n.window}
    assert kinds[32] is WindowKind.MESSAGE and kinds[64] is WindowKind.MESSAGE
    assert kinds[96] is WindowKind.PLANNED  # the prompt's end


def test_workloads_are_seeded_and_share_what_they_say():
    assert SystemPromptWorkload().build(3) == SystemPromptWorkload().build(3)
    assert DocumentWorkload().build(3) != DocumentWorkload().build(4)
    system = SystemPromptWorkload(num_batches=2, requests_per_batch=2, system_len=32).build(0)
    prompts = [r.token_ids for b in system.batches for r in b]
    assert len(prompts) == 4 and all(p[:32] == prompts[0][:32] for p in prompts)
    docs = DocumentWorkload(num_batches=8, num_documents=2, questions_per_document=3, gap_batches=(1, 2))
    trace = docs.build(0)
    assert trace.num_requests == 6
    chats = ConversationWorkload(num_batches=12, num_conversations=1, turns=3).build(0)
    turns = [r.token_ids for b in chats.batches for r in b]
    assert len(turns) == 3 and turns[1][: len(turns[0])] == turns[0] and turns[2][: len(turns[1])] == turns[1]
    # Message ends: the system prompt, then each user message and reply; the last is the prompt end.
    (third,) = chats.batches[[i for i, b in enumerate(chats.batches) if b][-1]]
    assert len(third.message_ends) == 2 + 2 * 2 and third.message_ends[-1] == third.prompt_len
    assert all(e > 0 for e in third.message_ends) and list(third.message_ends) == sorted(third.message_ends)
    assert system.batches[0][0].message_ends == (32,)
    unshared = UnsharedWorkload(num_batches=1, requests_per_batch=3).build(0)
    assert len({r.salt for r in unshared.batches[0]}) == 3
    mixed = mix([system, trace])
    assert mixed.prompt_tokens == system.prompt_tokens + trace.prompt_tokens


def test_bench_runs_every_policy_and_none_beats_the_unbounded_cache():
    result = cache_trace.main(["--scale", "0.05", "--budgets", "4+4", "--sglang-ratios", "0.8"])
    assert set(result) == {w.name for w in default_workloads()} | {"mix"}
    for name, rows in result.items():
        unbounded = rows["unbounded"]
        (row,) = rows["budgets"]
        for policy, outcome in row.policies.items():
            assert outcome is not None, (name, policy)
            assert outcome.prompt_tokens == unbounded.prompt_tokens
            # Same trace, same order: no cache hits more than one that never evicts anything.
            assert 0 <= outcome.hit_tokens <= unbounded.hit_tokens, (name, policy)
    assert result["unshared"]["unbounded"].hit_tokens == 0
    assert result["system-prompt"]["unbounded"].hit_ratio > 0.5


def test_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "hybatch", "bench", "cache-trace", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--budgets" in out.stdout and "SGLang" in out.stdout
