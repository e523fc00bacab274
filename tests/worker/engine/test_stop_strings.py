"""Stop strings, checked incrementally, give exactly what decoding the whole output after every token gave.

The reference is the engine's former check (``reference_stop``): after each token, decode every output
token and search from ``len(previous text) - len(longest stop)``. Tokenizers: the shipped byte-level
BPE (multi-byte characters split over byte tokens), a word-level one whose decode joins tokens with
spaces (plus skipped special tokens), and a Metaspace one (a leading space stripped from the first token).
"""

from __future__ import annotations

import random
import shutil

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from worker.bench.workloads import DEFAULT_CHECKPOINT
from worker.engine import LLM, SamplingParams
from worker.engine.detokenizer import IncrementalDetokenizer
from worker.engine.stop_strings import StopStringMatcher

PROMPT = [5, 6, 7]


def reference_stop(decode, output_ids: list[int], stops: list[str]) -> tuple[int, str, str] | None:
    """The former engine check: (tokens generated when it stopped, text before the stop, the stop)."""
    previous = ""
    longest = max(map(len, stops))
    for n in range(1, len(output_ids) + 1):
        text = decode(output_ids[:n])
        search_from = max(0, len(previous) - longest)
        previous = text
        hits = [(text.find(s, search_from), s) for s in stops]
        hits = [(pos, s) for pos, s in hits if pos >= 0]
        if hits:
            pos, stop = min(hits)
            return n, text[:pos], stop
    return None


def incremental_stop(decode, output_ids: list[int], stops: list[str]) -> tuple[int, str, str] | None:
    """The same through StopStringMatcher, with a prompt in front (as the engine's token_ids have)."""
    matcher = StopStringMatcher(tuple(stops))
    token_ids = list(PROMPT)
    for n, token in enumerate(output_ids, start=1):
        token_ids.append(token)
        hit = matcher.step(decode, token_ids, start=len(PROMPT))
        # The incremental text is the full decode after every step.
        assert matcher.detokenizer.text() == decode(output_ids[:n])
        assert len(matcher.detokenizer) == len(decode(output_ids[:n]))
        if hit is not None:
            return n, hit.text, hit.stop
    return None


@pytest.fixture(scope="module")
def byte_level() -> Tokenizer:
    return Tokenizer.from_file(str(DEFAULT_CHECKPOINT / "tokenizer.json"))


# GPT-2's byte-to-character table: how ByteLevel vocabularies spell each byte.
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
_CHAR_OF_BYTE = {b: chr(b) for b in _PRINTABLE} | {
    b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in _PRINTABLE)
}


def _byte_tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    """One token per UTF-8 byte of ``text``: multi-byte characters span tokens."""
    ids = [tokenizer.token_to_id(_CHAR_OF_BYTE[b]) for b in text.encode()]
    assert None not in ids
    return ids


@pytest.fixture(scope="module")
def word_level() -> Tokenizer:
    """Token i is 'w{i}'; no decoder, so decode joins tokens with spaces; 97-99 are special."""
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(97)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(f"<s{i}>", special=True) for i in range(3)])
    return tok


@pytest.fixture(scope="module")
def metaspace() -> Tokenizer:
    pieces = ["▁the", "▁cat", "▁sat", "s", "at", "▁on", "▁", "mat", "."]
    tok = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="▁"))
    tok.decoder = decoders.Metaspace()
    return tok


def _decode(tokenizer: Tokenizer):
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def _both(tokenizer, output_ids, stops):
    expected = reference_stop(_decode(tokenizer), output_ids, stops)
    assert incremental_stop(_decode(tokenizer), output_ids, stops) == expected
    return expected


def test_a_stop_string_spanning_tokens(byte_level, word_level, metaspace):
    ids = byte_level.encode("def spam(eggs):\n    return eggs").ids
    n, before, stop = _both(byte_level, ids, ["(eg"])
    assert (before, stop) == ("def spam", "(eg") and byte_level.decode(ids[: n - 1]) in "def spam(e"
    # A multi-byte character split over byte tokens, and a stop string that starts inside it.
    ids = _byte_tokens(byte_level, "price: 5€ and 😀!")
    assert _both(byte_level, ids, ["€ a"]) == (len("price: 5€ a".encode()), "price: 5", "€ a")
    assert _both(byte_level, ids, ["😀"]) == (len("price: 5€ and 😀".encode()), "price: 5€ and ", "😀")
    assert _both(word_level, [4, 97, 5, 6, 98, 99, 7], ["5 w6 w"]) == (7, "w4 w", "5 w6 w")
    assert _both(metaspace, [0, 1, 2, 6, 7, 8], ["cat sat"]) == (3, "the ", "cat sat")


def test_a_stop_string_at_the_very_start(byte_level, word_level, metaspace):
    ids = byte_level.encode("return None").ids
    assert _both(byte_level, ids, ["re"]) == (1, "", "re")
    assert _both(byte_level, _byte_tokens(byte_level, "€uro"), ["€"]) == (3, "", "€")
    assert _both(word_level, [97, 4, 5], ["w4"]) == (2, "", "w4")
    # Metaspace strips the first token's leading space: " the" reads "the" at the start.
    assert _both(metaspace, [0, 1], ["the"]) == (1, "", "the")


def test_a_stop_string_that_never_appears(byte_level, word_level, metaspace):
    assert _both(byte_level, _byte_tokens(byte_level, "naïve café, 日本語 😀"), ["€", "xyz"]) is None
    assert _both(word_level, [4, 97, 5, 6, 98], ["w4w5", "w97"]) is None
    assert _both(metaspace, [0, 1, 2, 5, 6, 7, 8], ["the mat", "  "]) is None


def test_the_earliest_stop_wins_and_ties_go_to_the_smaller_string(byte_level):
    ids = byte_level.encode("alpha beta gamma").ids
    assert _both(byte_level, ids, ["gamma", "beta", "bet"]) == _both(byte_level, ids, ["bet", "beta"])
    assert _both(byte_level, ids, ["bet", "beta"])[1:] == ("alpha ", "bet")


@pytest.mark.parametrize("seed", range(6))
def test_random_outputs_and_stops_match_the_reference(byte_level, word_level, metaspace, seed):
    rng = random.Random(seed)
    text = "héllo wörld: 5€ → 日本 😀 done"
    pools = {
        "byte": (byte_level, _byte_tokens(byte_level, text) + byte_level.encode(text).ids + [0, 1, 2]),
        "word": (word_level, list(range(1, 12)) + [97, 98, 99]),
        "meta": (metaspace, list(range(9))),
    }
    for tokenizer, pool in pools.values():
        for _ in range(40):
            ids = [rng.choice(pool) for _ in range(rng.randint(1, 30))]
            full = _decode(tokenizer)(ids)
            stops = []
            for _ in range(rng.randint(1, 3)):
                start = rng.randrange(max(len(full), 1))
                stops.append(full[start : start + rng.randint(1, 6)] or "zz")
            if rng.random() < 0.2:
                stops.append("never there")
            _both(tokenizer, ids, stops)


@pytest.mark.parametrize("kind", ["byte", "word"])
def test_decoding_work_per_token_does_not_grow_with_the_output(byte_level, word_level, kind):
    if kind == "byte":  # multi-byte characters split over byte tokens, between whole-word tokens
        tokenizer, ids = byte_level, (byte_level.encode(" spam").ids + _byte_tokens(byte_level, "€😀é")) * 300
    else:  # special tokens (decoded to nothing) between words
        tokenizer, ids = word_level, [4, 97, 5, 98, 99] * 400
    decoded_tokens = 0

    def counting_decode(token_ids):
        nonlocal decoded_tokens
        decoded_tokens += len(token_ids)
        return _decode(tokenizer)(token_ids)

    matcher = StopStringMatcher(("never there",))
    for n in range(1, len(ids) + 1):
        assert matcher.step(counting_decode, ids[:n]) is None
    assert matcher.detokenizer.text() == _decode(tokenizer)(ids)
    assert decoded_tokens <= 8 * len(ids)  # the former check decoded len(ids)**2 / 2 tokens


def test_the_detokenizer_refuses_text_it_no_longer_holds(byte_level):
    detokenizer = IncrementalDetokenizer(keep_chars=2)
    ids = byte_level.encode("one two three four").ids
    for n in range(1, len(ids) + 1):
        detokenizer.update(_decode(byte_level), ids[:n])
    assert detokenizer.text_since(len(detokenizer) - 2) == "ur"
    with pytest.raises(ValueError, match="no longer held"):
        detokenizer.text_since(0)


@pytest.fixture(scope="module")
def byte_level_llm(checkpoint_factory, tmp_path_factory):
    """A tiny random model with the shipped byte-level tokenizer (its outputs are arbitrary bytes)."""
    path = tmp_path_factory.mktemp("stop-strings") / "model"
    shutil.copytree(checkpoint_factory(vocab_size=8192, sliding_window=8), path)
    shutil.copy(DEFAULT_CHECKPOINT / "tokenizer.json", path / "tokenizer.json")
    return LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)


def test_the_engine_stops_where_the_former_check_did(byte_level_llm, byte_level):
    prompt = {"prompt_token_ids": byte_level.encode("def main():\n").ids}
    greedy = byte_level_llm.generate([prompt], SamplingParams(temperature=0, max_tokens=40))[0].outputs[0]
    text = greedy.text
    assert len(greedy.token_ids) == 40 and len(text) > 8
    candidates = {
        "spanning": [text[3:7]],
        "at the start": [text[:1]],
        "never": ["\x00never\x00"],
        "several": [text[10:12], text[5:9], text[-2:]],
    }
    for stops in candidates.values():
        out = byte_level_llm.generate([prompt], SamplingParams(temperature=0, max_tokens=40, stop=stops))[
            0
        ].outputs[0]
        expected = reference_stop(_decode(byte_level), greedy.token_ids, stops)
        if expected is None:
            assert (out.token_ids, out.text, out.finish_reason) == (greedy.token_ids, text, "length")
        else:
            n, before, stop = expected
            assert (out.token_ids, out.text, out.stop_reason) == (greedy.token_ids[:n], before, stop)
            assert out.finish_reason == "stop"
