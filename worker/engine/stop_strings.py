"""Stop strings: after each new token, find the earliest stop string in the output text, incrementally."""

from __future__ import annotations

from dataclasses import dataclass

from worker.engine.detokenizer import Decode, IncrementalDetokenizer


@dataclass(frozen=True)
class StopHit:
    text: str  # the output text before the stop string
    stop: str  # the stop string found


class StopStringMatcher:
    """Watches one sequence's output text for its stop strings, one token at a time.

    A stop string can span the boundary between the text seen before and the new text, so each step
    searches the last ``len(longest stop)`` characters of the previous text plus the new text, never
    all of it: work per token does not grow with the length of the output.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        if not stops or not all(stops):
            raise ValueError("stop strings must be a non-empty set of non-empty strings")
        self.stops = stops
        self.longest = max(map(len, stops))
        self.detokenizer = IncrementalDetokenizer(keep_chars=self.longest)

    def step(self, decode: Decode, token_ids: list[int], start: int = 0) -> StopHit | None:
        """Takes the output tokens ``token_ids[start:]`` after a new one was appended.

        Returns the earliest stop string in the text (ties: the smallest string), if any.
        """
        search_from = max(0, len(self.detokenizer) - self.longest)
        self.detokenizer.update(decode, token_ids, start)
        window = self.detokenizer.text_since(search_from)
        hits = [(pos, stop) for stop in self.stops if (pos := window.find(stop)) >= 0]
        if not hits:
            return None
        pos, stop = min(hits)
        return StopHit(self.detokenizer.text()[: search_from + pos], stop)
