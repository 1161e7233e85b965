"""Latency and throughput measured on this machine, for torch modules and onnxruntime sessions.

Reported latency is the median of repeats after warm-up: the median resists the outliers a shared, noisy machine
adds (a scheduler hiccup can double one call) while still reflecting typical cost, which min-of-N would understate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Timing:
    """Summary of repeated timings in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    repeats: int

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        ordered = sorted(samples)
        n = len(ordered)
        return cls(statistics.median(ordered), ordered[int(0.1 * (n - 1))], ordered[int(0.9 * (n - 1))], ordered[0], n)


def time_callable(
    fn: Callable[[], object], warmup: int = 5, repeats: int = 30, min_time_s: float = 0.0, warmup_s: float = 0.3
) -> Timing:
    """Call ``fn`` untimed for at least ``warmup`` calls and ``warmup_s`` seconds, then time at least ``repeats``
    calls (more until ``min_time_s``).

    The time-based warm-up matters: onnxruntime's thread pool and the CPU's clock take a few hundred calls to
    settle on this machine (a ResNet-20 ran at 0.80 ms for its first ~100 calls, then 0.48 ms).
    """
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_s:
        fn()
        done += 1
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Timing.of(samples)


def torch_latency(
    model: nn.Module, input_shape: tuple[int, ...], batch: int = 1, warmup: int = 5, repeats: int = 30
) -> Timing:
    """Time a forward pass of ``model`` on a random batch (eval mode, inference mode)."""
    model.eval()
    x = torch.randn(batch, *input_shape)
    with torch.inference_mode():
        return time_callable(lambda: model(x), warmup, repeats)


def torch_throughput(model: nn.Module, input_shape: tuple[int, ...], batch: int = 256, repeats: int = 5) -> float:
    """Images per second of ``model`` at a large batch (median over repeats)."""
    timing = torch_latency(model, input_shape, batch, warmup=1, repeats=repeats)
    return batch / (timing.median_ms / 1e3)


def ort_latency(
    session: object, input_shape: tuple[int, ...], batch: int = 1, warmup: int = 5, repeats: int = 30
) -> Timing:
    """Time one onnxruntime run on a random batch."""
    spec = session.get_inputs()[0]  # type: ignore[attr-defined]
    name, rng = spec.name, np.random.default_rng(0)
    if spec.type == "tensor(uint8)":  # a raw-pixel model
        x = rng.integers(0, 256, (batch, *input_shape), dtype=np.uint8)
    else:
        x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
    return time_callable(lambda: session.run(None, {name: x}), warmup, repeats)  # type: ignore[attr-defined]
