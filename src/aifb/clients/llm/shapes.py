"""The shape of an LLM workload beyond one prompt: length distributions (fixed, uniform,
normal, lognormal; seeded), shared system-prompt prefixes with the cache state (cold: salted
with the run's salt; warm: replayed before measuring), and multi-turn conversations.

Used by aifb.clients.llm.openai (PromptSource, LLMHttpClient) for every LLM kind, so one recipe
means the same for vllm, ollama and llamacpp (workflow/schemas/workloads/llm.schema.yaml).
"""

from __future__ import annotations

import math
import random

from aifb.errors import ServiceError
from aifb.units import parse_duration

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


# ----------------------------------------------------------------------------- shared prefixes

CACHE_STATES = ("cold", "warm")


class SharedPrefix:
    """workload.shared_prefix {tokens: P, fraction: f, groups: g}: a fraction f of the requests
    start with one of g shared system prompts of P tokens (group drawn uniformly, seeded).

    A group's text depends only on the group and P (not on the client's seed), so every
    client and process of a run sends the same g prefixes and a server's prefix cache can
    serve them across clients."""

    __slots__ = ("tokens", "fraction", "groups", "_texts")

    def __init__(self, tokens: int, fraction: float, groups: int):
        self.tokens, self.fraction, self.groups = tokens, fraction, groups
        self._texts: dict[int, str] = {}

    @classmethod
    def parse(cls, value) -> "SharedPrefix | None":
        if value is None:
            return None
        where = "workload.shared_prefix"
        if not isinstance(value, dict):
            raise ServiceError(f"{where}: expected {{tokens, fraction, groups}}, got {value!r}")
        unknown = sorted(set(value) - {"tokens", "fraction", "groups"})
        if unknown:
            raise ServiceError(f"{where}: unknown field(s) {', '.join(unknown)} (tokens, "
                               "fraction, groups)")
        tokens, fraction, groups = value.get("tokens"), value.get("fraction", 1.0), value.get("groups", 1)
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise ServiceError(f"{where}.tokens: expected a positive integer, got {tokens!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ServiceError(f"{where}.groups: expected a positive integer, got {groups!r}")
        if (not isinstance(fraction, (int, float)) or isinstance(fraction, bool)
                or not 0 <= fraction <= 1):
            raise ServiceError(f"{where}.fraction: expected a number in [0, 1], got {fraction!r}")
        return cls(tokens, float(fraction), groups)

    def pick(self, rng: random.Random) -> int | None:
        """The group of the next request, or None (no shared prefix)."""
        if self.fraction < 1.0 and rng.random() >= self.fraction:
            return None
        return rng.randrange(self.groups) if self.groups > 1 else 0

    def text(self, group: int, tokens_per_word: float, vocab: tuple) -> str:
        t = self._texts.get(group)
        if t is None:
            rng = random.Random(f"aifb-llm-prefix:{self.tokens}:{group}")
            words = max(1, round(self.tokens / tokens_per_word))
            t = self._texts[group] = " ".join(rng.choice(vocab) for _ in range(words))
        return t

    def describe(self) -> dict:
        return {"tokens": self.tokens, "fraction": self.fraction, "groups": self.groups}


def parse_cache(value) -> str:
    value = "cold" if value is None else value
    if value not in CACHE_STATES:
        raise ServiceError(f"workload.cache: {value!r} is not one of cold, warm")
    return value


def chat_messages(prefix: str | None, history: list, text: str, salt: str) -> list[dict]:
    """A chat request's messages: [system prefix], the conversation so far, the new user
    message; `salt` (cache: cold) starts the first message of a conversation."""
    msgs: list[dict] = []
    if prefix is not None:
        msgs.append({"role": "system", "content": salt + prefix})
        salt = ""
    if history:
        msgs.extend(history)
        salt = ""
    msgs.append({"role": "user", "content": salt + text})
    return msgs


def completion_text(prefix: str | None, history: list, text: str, salt: str) -> str:
    """The same as one completions prompt: prefix, the turns so far, the new text, separated by
    blank lines."""
    parts = [m["content"] for m in chat_messages(prefix, history, text, salt)]
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- conversations

def parse_turns(value) -> tuple[int, int]:
    """workload.turns: N or [min, max] turns per conversation (default 1)."""
    if value is None:
        return 1, 1
    d = Lengths.parse(value, "turns")
    if d.dist not in ("fixed", "uniform"):
        raise ServiceError("workload.turns: expected an integer or [min, max]")
    return d.lo, d.hi


def parse_think_time(value) -> float:
    """workload.think_time: a duration (seconds as a number, or "500ms"); default 0."""
    if value is None:
        return 0.0
    try:
        s = parse_duration(value)
    except Exception:  # noqa: BLE001 - any unparseable value gets the same named error
        raise ServiceError(f"workload.think_time: {value!r} is not a duration (e.g. 2s, 500ms)") from None
    if s < 0:
        raise ServiceError(f"workload.think_time: {value!r} is negative")
    return float(s)


class Conversation:
    """One multi-turn conversation on one worker slot: its id, how many turns it has, the
    next turn's index (1-based), its shared prefix, and the history as sent and answered
    (user messages as they went out, the assistant's actual replies)."""

    __slots__ = ("id", "turns", "turn", "prefix", "history")

    def __init__(self, id_: str, turns: int, prefix: str | None):
        self.id, self.turns, self.turn, self.prefix = id_, turns, 1, prefix
        self.history: list[dict] = []

    @property
    def over(self) -> bool:
        return self.turn > self.turns
