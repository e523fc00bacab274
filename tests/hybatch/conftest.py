from pathlib import Path

import pytest

from hybatch.prompt_tokenizer import PromptTokenizer
from tests.hybatch.checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-test")


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint: Path) -> PromptTokenizer:
    return PromptTokenizer.from_checkpoint(tiny_checkpoint)
