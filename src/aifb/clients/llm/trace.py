"""Request traces (Mooncake-style JSONL) for `load.arrival: trace` and
`workload.prompts.source: trace`: read, check, turn into arrival offsets, and generate the
small trace the project ships (data/traces/sample.jsonl).

One JSON object per line:

    {"timestamp": 0, "input_length": 812, "output_length": 96, "hash_ids": [0, 1]}

timestamp   milliseconds (any origin; non-decreasing): the request's arrival
input_length, output_length   tokens of the prompt and of the reply (max_tokens)
hash_ids    optional: the prompt's blocks of BLOCK_TOKENS tokens; requests sharing a leading
            run of hash ids share that prefix (the same seeded text per id)

Request i of the trace goes to client i mod clients (a client's requests stay in trace order);
its planned send time is t_load_start + (timestamp_i - timestamp_0) / speedup.

    python -m aifb.clients.llm.trace --out data/traces/sample.jsonl --requests 200 --seed 16
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from aifb.errors import ConfigError
from aifb.jsonio import iter_jsonl

BLOCK_TOKENS = 512    # tokens per hash id (Mooncake's block size)


def read_trace(path: Path) -> list[dict]:
    """The trace's requests, checked; ConfigError naming the line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"trace {path}: not found")
    out: list[dict] = []
    try:
        _check(path, iter_jsonl(path), out)
    except ValueError as exc:
        raise ConfigError(f"trace {path}: {exc}") from None
    if not out:
        raise ConfigError(f"trace {path}: holds no request")
    return out


def _check(path: Path, lines, out: list) -> None:
    """Append each line's request to out; ConfigError naming the first bad line."""
    last = None
    for n, obj in lines:
        if not isinstance(obj, dict):
            raise ConfigError(f"trace {path} line {n}: expected an object")
        ts, il, ol = obj.get("timestamp"), obj.get("input_length"), obj.get("output_length")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts < 0:
            raise ConfigError(f"trace {path} line {n}: timestamp (ms) must be a number >= 0")
        for key, v in (("input_length", il), ("output_length", ol)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"trace {path} line {n}: {key} must be a positive integer")
        hids = obj.get("hash_ids") or []
        if not isinstance(hids, list) or not all(isinstance(h, int) for h in hids):
            raise ConfigError(f"trace {path} line {n}: hash_ids must be a list of integers")
        if last is not None and ts < last:
            raise ConfigError(f"trace {path} line {n}: timestamps must not decrease "
                              f"({ts} after {last})")
        last = ts
        out.append({"timestamp": float(ts), "input_length": il, "output_length": ol,
                    "hash_ids": hids})


def arrival_offsets_ns(trace: list[dict], speedup: float = 1.0) -> list[int]:
    """Each request's planned send time after the load's start, in ns."""
    t0 = trace[0]["timestamp"]
    return [round((r["timestamp"] - t0) * 1e6 / speedup) for r in trace]


def offered_rate(trace: list[dict], speedup: float = 1.0) -> float:
    """Requests per second the replay offers (over the trace's span; 1 request: 1/s)."""
    span_s = (trace[-1]["timestamp"] - trace[0]["timestamp"]) / 1e3 / speedup
    return (len(trace) - 1) / span_s if span_s > 0 and len(trace) > 1 else 1.0


def generate(requests: int, seed: int, rate: float = 10.0, prefixes: int = 4) -> list[dict]:
    """A synthetic trace: Poisson arrivals at `rate`/s with bursts, lognormal lengths, and
    `prefixes` shared system-prompt blocks (hash ids 0..prefixes-1) on 70% of the requests."""
    rng = random.Random(f"aifb-trace:{seed}")
    t = 0.0
    out = []
    next_id = prefixes
    for i in range(requests):
        burst = rng.random() < 0.1
        t += rng.expovariate(rate * (5 if burst else 1)) * 1e3
        il = max(16, min(4096, round(rng.lognormvariate(6.0, 0.8))))
        ol = max(4, min(1024, round(rng.lognormvariate(4.5, 0.7))))
        blocks = -(-il // BLOCK_TOKENS)
        hids = [rng.randrange(prefixes)] if rng.random() < 0.7 else []
        while len(hids) < blocks:
            hids.append(next_id)
            next_id += 1
        out.append({"timestamp": round(t, 3), "input_length": il, "output_length": ol,
                    "hash_ids": hids})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate a Mooncake-style request trace (JSONL).")
    p.add_argument("--out", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--rate", type=float, default=10.0, help="mean arrivals per second")
    args = p.parse_args(argv)
    lines = [json.dumps(r, separators=(",", ":")) for r in generate(args.requests, args.seed, args.rate)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
