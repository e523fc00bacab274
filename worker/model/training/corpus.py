"""The training corpus: the running Python's own standard-library `.py` sources.

Files are listed in sorted order of their POSIX relative path, and a fixed 2% hash bucket of those
paths is held out for evaluation, so the split depends only on the file names and never on the machine.
"""

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HELDOUT_PERCENT = 2
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclass(frozen=True)
class SourceFile:
    """One stdlib source file: its path relative to the stdlib root (POSIX form) and its text."""

    rel_path: str
    text: str


@dataclass(frozen=True)
class CorpusSplit:
    """Train and held-out files, each in sorted `rel_path` order."""

    train: tuple[SourceFile, ...]
    heldout: tuple[SourceFile, ...]


def stdlib_root() -> Path:
    """Return the standard-library directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(rel_path: str) -> bool:
    """Whether `rel_path` falls in the held-out bucket (first 8 bytes of its SHA-256, mod 100, < 2)."""
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


def read_stdlib_sources(root: Path | None = None) -> list[SourceFile]:
    """Read every UTF-8 `.py` file under `root` (default: the stdlib), sorted by relative path.

    Third-party package folders and caches are skipped, and so are the few test files that are
    deliberately not valid UTF-8.
    """
    root = stdlib_root() if root is None else root
    sources = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _EXCLUDED_DIRS.intersection(rel.parts) or not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        sources.append(SourceFile(rel.as_posix(), text))
    return sorted(sources, key=lambda source: source.rel_path)


def split_corpus(sources: list[SourceFile]) -> CorpusSplit:
    """Split sorted `sources` into train and held-out files by `is_heldout`."""
    train = tuple(s for s in sources if not is_heldout(s.rel_path))
    heldout = tuple(s for s in sources if is_heldout(s.rel_path))
    return CorpusSplit(train=train, heldout=heldout)
