"""The timing model: load, prompt evaluation (KV-cache aware), generation, pulls."""

from __future__ import annotations

import asyncio
import re
import zlib
from dataclasses import dataclass, replace

NS = 1_000_000_000


@dataclass(frozen=True)
class Timing:
    """Speeds of one simulated GPU node.

    Durations reported in responses are the modelled ones; the simulator really sleeps
    `modelled * time_scale` (0 = never sleeps, for unit tests)."""

    load_delay: float = 0.2  # seconds to load a ~20 GB model cold (scaled by size)
    prompt_tps: float = 2000.0  # prompt tokens per second (uncached part only)
    gen_tps: float = 200.0  # generated tokens per second
    pull_bps: float = 13e9  # registry bytes per second
    pull_tick: float = 0.06  # seconds between pull progress lines
    warm_load: float = 0.02  # load_duration reported when the runner is already loaded
    time_scale: float = 1.0
    load_base: float = 0.0  # fixed seconds every cold load adds (runner start-up)

    @classmethod
    def fast(cls) -> Timing:
        return cls()

    @classmethod
    def realistic(cls, time_scale: float = 1.0) -> Timing:
        """A 24 GB GPU with a 22-32B Q4 model (issue 14's numbers): a cold load takes 8 s
        (codestral:22b) to 12 s (qwq:32b), prompts evaluate at 2000 tokens/s, answers come
        at 30 tokens/s. `time_scale` < 1 replays a day faster than real time (0.01: 100x);
        reported durations stay the modelled ones."""
        return cls(load_delay=10.5, load_base=1.5, prompt_tps=2000.0, gen_tps=30.0,
                   pull_bps=100e6, pull_tick=0.06, warm_load=0.05, time_scale=time_scale)

    @classmethod
    def instant(cls) -> Timing:
        """Same reported numbers as `Timing()`, but nothing ever sleeps."""
        return cls(time_scale=0.0)

    def scaled(self, factor: float) -> Timing:
        return replace(self, time_scale=factor)

    def load_seconds(self, size: int) -> float:
        return self.load_base + self.load_delay * max(0.1, size / 20e9)

    def prompt_seconds(self, tokens: int) -> float:
        return tokens / self.prompt_tps if self.prompt_tps > 0 else 0.0

    def token_seconds(self) -> float:
        return 1.0 / self.gen_tps if self.gen_tps > 0 else 0.0

    async def sleep(self, modelled: float) -> None:
        """Sleep for the real share of a modelled duration (always yields once)."""
        await asyncio.sleep(max(0.0, modelled * self.time_scale))


_TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def tokenize(text: str) -> list[int]:
    """Roughly chars/4 tokens; stable, so a shared text prefix gives a shared token prefix."""
    return [zlib.crc32(piece.encode()) % 150000 for piece in _TOKEN.findall(text)]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
