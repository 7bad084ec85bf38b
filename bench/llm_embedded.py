"""EmbeddedModel.chat vs plain llama-cpp-python on the same prompt, side by side in one run.

Both sides load the same GGUF file with the same ``llama_cpp.Llama`` settings (EmbeddedModel exposes
them as ``llama_settings``), get the same prompt, temperature, seed and ``max_tokens``, and are timed
around the chat call only (load times are printed separately). After one warm-up each, calls
alternate in ABBA order so that machine noise spreads evenly; medians are reported. A last section
times one structured decision (a Plan schema with an enum and bounded integers) through EmbeddedModel.

    python bench/llm_embedded.py [--repeats 7] [--max-tokens 96] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Literal

from pydantic import BaseModel, Field

from sciagent.llm.base import OutputSchema
from sciagent.llm.embedded import EmbeddedModel

PROMPT = [{"role": "user", "content": "Explain in a paragraph why proteins fold."}]
DECISION = [
    {"role": "system", "content": "Answer with a JSON simulation plan."},
    {"role": "user", "content": "Plan a molecular dynamics run of villin at room temperature."},
]
OURS, PLAIN = "EmbeddedModel.chat", "Llama.create_chat_completion"


class Plan(BaseModel):
    solvent: Literal["implicit", "explicit"]
    temperature_k: int = Field(ge=280, le=320)
    replicas: int = Field(ge=1, le=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="default: the available cores")
    args = parser.parse_args()

    import llama_cpp

    print(f"llama-cpp-python {llama_cpp.__version__}, load average {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    model = EmbeddedModel(n_threads=args.threads)
    ours_load = time.perf_counter() - start
    start = time.perf_counter()
    raw = llama_cpp.Llama(model_path=str(model.model_path), **model.llama_settings)
    raw_load = time.perf_counter() - start
    print(f"model {model.model_path.name}, settings {model.llama_settings}, seed {model.seed}")
    print(f"load: EmbeddedModel {ours_load:.2f} s (weights {model.load_time_s:.2f} s), ", end="")
    print(f"plain Llama {raw_load:.2f} s")

    def ours() -> tuple[int, float, str]:
        start = time.perf_counter()
        response = model.chat(PROMPT, temperature=0.0, max_tokens=args.max_tokens)
        return response.usage.completion_tokens, time.perf_counter() - start, response.text or ""

    def plain() -> tuple[int, float, str]:
        start = time.perf_counter()
        out = raw.create_chat_completion(
            messages=PROMPT, temperature=0.0, max_tokens=args.max_tokens, seed=model.seed
        )
        wall = time.perf_counter() - start
        return out["usage"]["completion_tokens"], wall, out["choices"][0]["message"]["content"] or ""

    ours(), plain()  # warm-up: first-call allocations, page-in of the mapped weights
    sides = {OURS: ours, PLAIN: plain}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    texts: dict[str, set[str]] = {name: set() for name in sides}
    for repeat in range(args.repeats):
        order = (
            list(sides.items()) if repeat % 2 == 0 else list(sides.items())[::-1]
        )  # ABBA: no side always first
        for name, call in order:
            tokens, wall, text = call()
            rates[name].append(tokens / wall)
            texts[name].add(text)
    print(f"\ntokens/s, {args.repeats} alternating repeats of {args.max_tokens} max tokens (median, min-max)")
    for name, values in rates.items():
        print(f"  {name:30s} {statistics.median(values):7.1f}   ({min(values):.1f}-{max(values):.1f})")
    ratio = statistics.median(rates[OURS]) / statistics.median(rates[PLAIN])
    paired = statistics.median([a / b for a, b in zip(rates[OURS], rates[PLAIN], strict=True)])
    print(f"  ratio ours/plain               {ratio:7.3f}   (goal >= 0.9)")
    print(f"  median of per-pair ratios      {paired:7.3f}   (less sensitive to load drifting)")
    same = texts[OURS] == texts[PLAIN] and len(texts[OURS]) == 1
    print(f"  identical text on both sides and every repeat: {same}")

    schema = OutputSchema("Plan", Plan.model_json_schema())
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        response = model.chat(DECISION, output_schema=schema, max_tokens=96)
        walls.append(time.perf_counter() - start)
    plan = Plan.model_validate_json(response.text or "")
    print(f"\nstructured decision (Plan schema): first {walls[0]:.2f} s (builds the grammar), ", end="")
    print(f"then {statistics.median(walls[1:]):.2f} s; {response.usage.completion_tokens} tokens")
    print(f"  answer {response.text!r} -> validates: {plan!r}")


if __name__ == "__main__":
    main()
