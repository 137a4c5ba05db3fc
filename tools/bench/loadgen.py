"""What every load-generator process shares: the start handshake, the time window, the result line.

A load generator is a separate process started by run_bench.py. It opens its
connections, checks each with one call, prints `ready`, then waits for a line
`go <epoch>` on stdin. From that instant it keeps every connection (or caller)
busy back-to-back for `warmup + duration` seconds; only calls that complete
inside the last `duration` seconds are measured. Calls that fail count as
errors whenever they happen. At the end it writes its Result as JSON to the
file named by --result and prints `done`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One process's measured window; latencies in microseconds."""

    ok: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_us: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls(**json.loads(text))


class Window:
    """The warm-up and measured windows, in time.perf_counter()'s clock (uvloop's is in ms)."""

    def __init__(self, start_epoch: float, warmup: float, duration: float) -> None:
        self.start = time.perf_counter() + (start_epoch - time.time())
        self.measure_from = self.start + warmup
        self.end = self.measure_from + duration
        self.result = Result()

    def running(self) -> bool:
        return time.perf_counter() < self.end

    async def wait_start(self) -> None:
        await asyncio.sleep(max(0.0, self.start - time.perf_counter()))

    def record(self, started: float, ok: bool, detail: str = "") -> None:
        """A call started at `started` (time.perf_counter()) has just completed."""
        now = time.perf_counter()
        if not ok:
            self.result.errors += 1
            if self.result.first_error is None:
                self.result.first_error = detail[:300]
            return
        if self.measure_from <= now <= self.end:
            self.result.ok += 1
            self.result.latencies_us.append(round((now - started) * 1e6))


async def handshake(loop: asyncio.AbstractEventLoop) -> float:
    """Say `ready`, then wait for `go <epoch>`; returns the epoch."""
    print("ready", flush=True)
    line: str = await loop.run_in_executor(None, sys.stdin.readline)
    word, _, value = line.strip().partition(" ")
    if word != "go":
        raise SystemExit(f"load generator: expected 'go <epoch>' on stdin, got {line!r}")
    return float(value)


def finish(result: Result, path: str) -> None:
    with open(path, "w") as f:
        f.write(result.to_json())
    print("done", flush=True)
