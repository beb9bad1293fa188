"""The shape of an LLM workload beyond one prompt: length distributions (fixed, uniform,
normal, lognormal; seeded), shared system-prompt prefixes with the cache state (cold: salted
with the run's salt; warm: replayed before measuring), and multi-turn conversations.

Used by aifb.clients.openai (PromptSource, LLMHttpClient) for every LLM kind, so one recipe
means the same for vllm, ollama and llamacpp (workflow/schemas/workloads/llm.schema.yaml).
"""

from __future__ import annotations

import math
import random

from ..errors import ServiceError
from ..units import parse_duration

DISTS = ("fixed", "uniform", "normal", "lognormal")


class Lengths:
    """A token-length distribution, drawn from with a seeded random.Random.

    An integer N is fixed; [min, max] is uniform over the integers (random.randint: the draws
    of the earlier fixed/ranged forms are unchanged); a mapping {dist: fixed|uniform|normal|
    lognormal, ...} names its distribution: fixed {value}, uniform {min, max}, normal and
    lognormal {mean, sd, min (default 1), max (default none)}. lognormal's mean and sd are
    those of the lengths themselves (not of their logarithm). Draws are rounded and clipped
    to [min, max]; a length is never below 1.
    """

    __slots__ = ("dist", "lo", "hi", "mean", "sd", "spec", "_mu", "_sigma")

    def __init__(self, dist: str, lo: int, hi: int | None, mean: float | None = None,
                 sd: float | None = None, spec=None):
        self.dist, self.lo, self.hi, self.mean, self.sd = dist, lo, hi, mean, sd
        self.spec = spec
        self._mu = self._sigma = 0.0
        if dist == "lognormal":
            self._sigma = math.sqrt(math.log1p((sd / mean) ** 2))
            self._mu = math.log(mean) - self._sigma ** 2 / 2

    @classmethod
    def parse(cls, value, name: str) -> "Lengths | None":
        where = f"workload.{name}"
        if value is None:
            return None
        if isinstance(value, bool):
            raise ServiceError(f"{where}: expected an integer, [min, max] or a distribution, got "
                               f"{value!r}")
        if isinstance(value, int) or (isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)):
            lo, hi = (value, value) if isinstance(value, int) else value
            if lo < 1 or hi < lo:
                raise ServiceError(f"{where}: need 1 <= min <= max, got {value!r}")
            return cls("fixed" if lo == hi else "uniform", lo, hi, spec=value)
        if not isinstance(value, dict):
            raise ServiceError(f"{where}: expected an integer, [min, max] or a distribution "
                               f"{{dist: {'|'.join(DISTS)}, ...}}, got {value!r}")
        dist = value.get("dist")
        if dist not in DISTS:
            raise ServiceError(f"{where}.dist: {dist!r} is not one of {', '.join(DISTS)}")
        allowed = {"fixed": {"value"}, "uniform": {"min", "max"}}.get(dist, {"mean", "sd", "min", "max"})
        unknown = sorted(set(value) - allowed - {"dist"})
        if unknown:
            raise ServiceError(f"{where}: {dist} takes {', '.join(sorted(allowed))}, not "
                               f"{', '.join(unknown)}")

        def num(key, default=None, integer=False):
            v = value.get(key, default)
            ok = isinstance(v, int) if integer else isinstance(v, (int, float))
            if v is None or isinstance(v, bool) or not ok:
                raise ServiceError(f"{where}.{key}: expected {'an integer' if integer else 'a number'}"
                                   f", got {v!r}")
            return v

        if dist in ("fixed", "uniform"):
            out = cls.parse([num("value", integer=True)] * 2 if dist == "fixed" else
                            [num("min", integer=True), num("max", integer=True)], name)
            out.spec = dict(value)
            return out
        mean, sd = float(num("mean")), float(num("sd"))
        lo = num("min", 1, integer=True)
        hi = value.get("max")
        if hi is not None:
            hi = num("max", integer=True)
        if mean <= 0 or sd < 0 or lo < 1 or (hi is not None and hi < lo):
            raise ServiceError(f"{where}: need mean > 0, sd >= 0 and 1 <= min <= max, got {value!r}")
        return cls(dist, lo, hi, mean, sd, spec=dict(value))

    def draw(self, rng: random.Random) -> int:
        if self.dist in ("fixed", "uniform"):
            return rng.randint(self.lo, self.hi)
        x = (rng.gauss(self.mean, self.sd) if self.dist == "normal"
             else rng.lognormvariate(self._mu, self._sigma))
        n = max(self.lo, round(x))
        return n if self.hi is None else min(n, self.hi)

    @property
    def max(self) -> int | None:
        return self.hi

    def describe(self):
        """[min, max] for the integer forms, else the distribution's mapping as written."""
        return dict(self.spec) if isinstance(self.spec, dict) else [self.lo, self.hi]
