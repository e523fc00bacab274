"""The one owner of a sequence's KV blocks: attaches a prefix-cache hit, allocates, evicts, releases.

The scheduler decides *who* runs and who is preempted; this manager does every block move that
follows, and is the only writer of a sequence's ``full_blocks``, ``swa_blocks``, ``swa_first_block``,
``block_hashes``, ``num_computed_tokens`` and ``num_cached_tokens`` (and adds to ``retain_at`` where a
prompt diverges from a cached path):

    match(seq)                      the deepest hit the prefix cache holds (a PrefixMatch); only adds
                                    entries the shared tier holds past the tree, if it is on
    admit(seq, match, max_tokens)   attach the match and allocate the first chunk, all or nothing
    grow(seq, num_tokens)           allocate the next chunk, evicting cache entries if it must
    advance(seq, num_tokens)        the step computed them: hash, cache, free SWA blocks left behind
    release(seq, preempted=...)     finished or preempted: every block back (the cache keeps its own)

Blocks are reference-counted (``BlockPool``): the cache holds one reference on each block it keeps,
a sequence one on each block in its lists, so a block is free only when neither holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.kv_cache.block_hash import chain_hash
from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_sequence import KVSequence
from worker.kv_cache.prefix_cache import PrefixCache, PrefixMatch


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    def __init__(self, blocks: BlockManager, cache: PrefixCache | None = None):
        """``cache`` is None when prefix caching is off: sequences then only allocate and free."""
        self.blocks = blocks
        self.cache = cache

    # -- admission -------------------------------------------------------------------------------
    def match(self, seq: KVSequence) -> PrefixMatch | None:
        """The deepest prefix-cache hit for ``seq`` (None when caching is off). Changes nothing but
        the shared-tier entries it adds to the tree (``PrefixCache.attach_shared``): pass it to
        ``admit`` before anything else changes the cache."""
        if self.cache is None:
            return None
        self.cache.attach_shared(seq)
        return self.cache.match(seq)

    def admit(self, seq: KVSequence, match: PrefixMatch | None, max_tokens: int) -> int:
        """Makes a waiting ``seq`` resume at ``match`` and allocates its first chunk (at most
        ``max_tokens`` tokens); returns that chunk's length. 0 when it does not fit: ``seq`` then holds
        nothing and has computed nothing, as before the call.

        Entries of the match on the host or disk are promoted, their KV loaded during the next step.
        The first admission's hit is what billing counts (``num_cached_tokens``); a recomputation
        after a preemption is ours.
        """
        taken = None
        if match is not None:
            taken = self.cache.take(seq, match)
            seq.full_blocks = list(taken.full_blocks)
            seq.block_hashes = list(taken.block_hashes)
            seq.swa_blocks = list(taken.window)
            seq.swa_first_block = len(taken.full_blocks) - len(taken.window)
            seq.num_computed_tokens = taken.match.num_cached_tokens
        num_tokens = min(seq.num_uncomputed_tokens, max_tokens)
        if not self.grow(seq, num_tokens):
            self.release(seq, preempted=True)
            return 0
        if taken is not None:
            self._plan_divergence(seq, taken.match)
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = min(taken.match.num_cached_tokens, seq.prompt_len)
                self.cache.record_lookup(seq, taken.match)
        return num_tokens

    def _plan_divergence(self, seq: KVSequence, match: PrefixMatch) -> None:
        # Where a prompt leaves a cached path, the next prompt with that prefix will leave it too (the
        # same document with another question, the same system prompt with another conversation):
        # a planned window there. It is the hit's own window when the hit reaches that far, else
        # one this sequence retains when it computes past that point. A match that ends at a leaf
        # is no divergence: the prompt extends a cached one (the next turn of a conversation), so
        # the windows it resumes from have served their purpose and it plans its own further down.
        point = match.diverges_at
        if point is None:
            return
        if match.extends_leaf:
            self.cache.pass_windows(seq, match)
        elif point == match.num_cached_tokens:
            self.cache.plan_window(match.nodes[-1])
        else:
            seq.retain_at = seq.retain_at | {point}

    # -- running ---------------------------------------------------------------------------------
    def grow(self, seq: KVSequence, num_tokens: int) -> bool:
        """Gives ``seq`` blocks for tokens up to ``num_computed + num_tokens``; False (nothing changed
        but cache entries evicted) when the pools cannot supply them even after evicting."""
        need = self.blocks.demand(seq, num_tokens)
        # SWA blocks that go dead before this chunk are returned first; they free a block only if
        # the sequence is their last holder (a retained window may share them).
        swa_need = need.swa - self._freeable_dead_swa_blocks(seq)
        if not self._fits(need.full, swa_need) and self.cache is not None:
            self.cache.reclaim(need.full, swa_need)
        if not self._fits(need.full, swa_need):
            return False
        self._release_dead_swa_blocks(seq)
        blocks_needed = _ceil_div(seq.num_computed_tokens + num_tokens, self.blocks.block_size)
        while len(seq.full_blocks) < blocks_needed:
            seq.full_blocks.append(self.blocks.full.allocate())
        if self.blocks.window:
            if not seq.swa_blocks:
                seq.swa_first_block = self.blocks.first_live_swa_block(seq.num_computed_tokens)
            while seq.swa_first_block + len(seq.swa_blocks) < blocks_needed:
                seq.swa_blocks.append(self.blocks.swa.allocate())
        return True

    def advance(self, seq: KVSequence, num_tokens: int) -> None:
        """Records that ``seq``'s last step computed ``num_tokens`` more tokens: hashes its newly
        completed full blocks, adds them (and the windows it passed) to the prefix cache, and frees
        the SWA blocks no later computation reads."""
        previous = seq.num_computed_tokens
        seq.num_computed_tokens += num_tokens
        self._record_block_hashes(seq)
        if self.cache is not None:
            self.cache.cache_computed(seq, previous)
        self._release_dead_swa_blocks(seq)

    def release(self, seq: KVSequence, *, preempted: bool) -> None:
        """Returns every block ``seq`` holds (what the cache took stays cached). A preempted sequence
        also forgets what it computed: it recomputes from the prefix cache when admitted again."""
        for block in seq.full_blocks:
            self.blocks.full.release(block)
        for block in seq.swa_blocks:
            self.blocks.swa.release(block)
        seq.full_blocks.clear()
        seq.swa_blocks.clear()
        seq.swa_first_block = 0
        if preempted:
            seq.num_computed_tokens = 0
            seq.block_hashes.clear()

    # -- helpers ---------------------------------------------------------------------------------
    def _fits(self, full: int, swa: int) -> bool:
        return full <= self.blocks.full.num_free and swa <= self.blocks.swa.num_free

    def _freeable_dead_swa_blocks(self, seq: KVSequence) -> int:
        dead = self.blocks.dead_swa_blocks(seq, seq.num_computed_tokens)
        return sum(1 for block in seq.swa_blocks[:dead] if self.blocks.swa.ref_counts[block] == 1)

    def _release_dead_swa_blocks(self, seq: KVSequence) -> None:
        dead = self.blocks.dead_swa_blocks(seq, seq.num_computed_tokens)
        for block in seq.swa_blocks[:dead]:
            self.blocks.swa.release(block)
        del seq.swa_blocks[:dead]
        seq.swa_first_block += dead
        if not seq.swa_blocks:
            seq.swa_first_block = self.blocks.first_live_swa_block(seq.num_computed_tokens)

    def _record_block_hashes(self, seq: KVSequence) -> None:
        size = self.blocks.block_size
        num_complete = seq.num_computed_tokens // size
        while len(seq.block_hashes) < num_complete:
            i = len(seq.block_hashes)
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            block_hash = chain_hash(parent, seq.token_ids[i * size : (i + 1) * size], seq.cache_salt)
            seq.block_hashes.append(block_hash)
            self.blocks.full.set_hash(seq.full_blocks[i], block_hash)

    def check_integrity(self, running: Sequence[KVSequence] = ()) -> None:
        """Every block's ref count equals the references ``running`` (all sequences holding blocks)
        and the cache hold; the cache's own structures agree with its tree."""
        cached = self.cache.held_blocks() if self.cache is not None else None
        self.blocks.check_integrity(running, cached)
        if self.cache is not None:
            self.cache.check_integrity()
