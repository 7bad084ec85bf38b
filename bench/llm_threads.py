"""Embedded model speed by thread count, on a quiet machine and beside one CPU-bound process.

llama.cpp's worker threads meet at a barrier after every operation, so when another process holds
one of the cores the thread that shares it gates all the others. This prints tokens per second for
each thread count, quiet and loaded (a busy-looping child process), measured side by side in one run,
and the ratio to the all-cores setting: the measurement ``default_threads`` is chosen from.

    python bench/llm_threads.py [--repeats 3] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
from collections.abc import Iterator
from contextlib import contextmanager

from sciagent.llm.embedded import EmbeddedModel, available_cores

PROMPT = [{"role": "user", "content": "Explain in a paragraph why proteins fold."}]


def _spin() -> None:
    while True:
        pass


@contextmanager
def _one_busy_core(loaded: bool) -> Iterator[None]:
    if not loaded:
        yield
        return
    hog = multiprocessing.Process(target=_spin, daemon=True)
    hog.start()
    try:
        yield
    finally:
        hog.terminate()
        hog.join()


def _tokens_per_s(model: EmbeddedModel, max_tokens: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        reply = model.chat(PROMPT, max_tokens=max_tokens)
        rates.append(reply.usage.completion_tokens / reply.latency_s)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    cores = available_cores()
    counts = sorted({1, max(1, cores - 1), cores})
    models = {n: EmbeddedModel(n_threads=n) for n in counts}
    for model in models.values():
        model.chat(PROMPT, max_tokens=8)  # warm-up
    print(f"{cores} cores; tokens/s (median of {args.repeats}), ratio to {cores} thread(s)")
    for loaded in (False, True):
        with _one_busy_core(loaded):
            rates = {n: _tokens_per_s(m, args.max_tokens, args.repeats) for n, m in models.items()}
        label = "one core busy" if loaded else "quiet"
        row = ", ".join(f"{n} thread(s) {r:.1f} ({r / rates[cores]:.2f}x)" for n, r in rates.items())
        print(f"{label:>14}: {row}")


if __name__ == "__main__":
    main()
