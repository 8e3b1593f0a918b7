"""The timing loop every benchmark script shares.

    from timing import time_calls           # benchmarks/ is on sys.path when a script runs
    t = time_calls(lambda: step(x), repeats=5)
    t.first, t.best, t.median                # seconds

`fn` is called once untimed-for-the-statistics (its time is `first`: it includes compilation when
`fn` calls a fresh `jax.jit`), then `repeats` more times; every result is passed through
`jax.block_until_ready`, so asynchronous dispatch is not mistaken for speed (non-JAX results pass
through it unchanged). Which statistic a table reports is the script's choice: the best call where
other jobs share the machine and noise only adds time, the median where each call does real I/O.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  first: float                  # seconds of the first call (compilation, caches)
  times: tuple[float, ...]      # seconds of each of the `repeats` calls after it

  @property
  def best(self) -> float:
    return min(self.times)

  @property
  def median(self) -> float:
    return statistics.median(self.times)


def time_calls(fn, repeats: int, *, first: bool = True) -> Timing:
  """Times `fn()`: one first call (unless first=False: the caller has warmed it up), then
  `repeats` >= 1 calls. Returns a `Timing` in seconds."""
  if repeats < 1:
    raise ValueError(f"time_calls: repeats must be >= 1, got {repeats}")
  first_s = float("nan")
  if first:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return Timing(first_s, tuple(times))
