from pathlib import Path

import pytest

from hybatch.prompt_tokenizer import ChatTemplateError, CheckpointFilesError, PromptTokenizer
from tests.hybatch.checkpoint import write_tiny_checkpoint

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]


def test_reads_context_vocab_and_template(tokenizer: PromptTokenizer) -> None:
    assert tokenizer.context_tokens == 64 and tokenizer.vocab_size > 0
    text = tokenizer.render_chat(MESSAGES)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nhello world<|im_end|>" in text
    ids = tokenizer.encode_chat(MESSAGES)
    assert ids[0] == tokenizer.tokenizer.token_to_id("<|im_start|>")  # special tokens parsed as such
    assert tokenizer.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_missing_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFilesError, match="tokenizer.json"):
        PromptTokenizer.from_checkpoint(tmp_path)


def test_template_exceptions_become_chat_template_errors(tmp_path: Path) -> None:
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}x"
    tokenizer = PromptTokenizer.from_checkpoint(write_tiny_checkpoint(tmp_path / "s", chat_template=strict))
    with pytest.raises(ChatTemplateError, match="first must be user"):
        tokenizer.encode_chat(MESSAGES)


def test_no_template_means_no_chat(tmp_path: Path) -> None:
    tokenizer = PromptTokenizer.from_checkpoint(write_tiny_checkpoint(tmp_path / "n", chat_template=None))
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tokenizer.encode_chat(MESSAGES)


def test_same_ids_as_the_engine_tokenizer(tiny_checkpoint: Path, tokenizer: PromptTokenizer) -> None:
    from worker.model.tokenizer import Tokenizer

    engine_tokenizer = Tokenizer(tiny_checkpoint)
    assert tokenizer.encode_chat(MESSAGES) == engine_tokenizer.apply_chat_template(MESSAGES)
    assert tokenizer.encode_completion("hello world") == engine_tokenizer.encode(
        "hello world", add_special_tokens=True
    )


def test_message_boundaries_are_where_each_message_ends(tokenizer: PromptTokenizer) -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "and?"}]
    ids, boundaries = tokenizer.encode_chat_with_boundaries(messages)
    assert ids == tokenizer.encode_chat(messages)
    # Reference: the first k messages encoded on their own are a prefix of the whole.
    expected = []
    for k in range(1, len(messages) + 1):
        text = tokenizer.render_chat(messages[:k], add_generation_prompt=False)
        alone = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
        assert ids[: len(alone)] == alone
        expected.append(len(alone))
    assert list(boundaries) == expected and boundaries[-1] < len(ids)
    for offset, message in zip(boundaries, messages, strict=True):
        before = tokenizer.tokenizer.decode(ids[:offset], skip_special_tokens=False)
        assert before.endswith(message["content"] + "<|im_end|>\n")  # the message and its end marker
    # A later request repeating the first two messages shares the ids up to the second boundary.
    other = tokenizer.encode_chat(messages[:2] + [{"role": "user", "content": "other"}])
    assert other[: boundaries[1]] == ids[: boundaries[1]]
