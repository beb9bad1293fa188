"""The LLM kinds' workload and prompts: `LLMWorkload` parses the recipe's `workload:` (one shape
for vllm, ollama and llamacpp), `PromptSource` makes the seeded prompts (synthetic words,
ShareGPT, JSONL or a trace) with their requested output lengths, and `with_prompt_facts` adds
what they were to a client's describe(). No network here: the clients (aifb.clients.llm.openai,
aifb.clients.llm.ollama) send what this module builds.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from aifb.errors import ConfigError, ServiceError
from aifb.jsonio import iter_jsonl
from aifb.paths import work_root
from aifb.clients.llm.embeddings import EMBED_APIS
from aifb.clients.llm.shapes import Lengths, SharedPrefix, parse_cache, parse_think_time, parse_turns
from aifb.clients.llm.trace import BLOCK_TOKENS, read_trace

DEFAULT_MAX_TOKENS = 256
CHARS_PER_TOKEN = 4.0             # estimate of a ShareGPT reply's tokens without a tokenizer
CALIBRATION_WORDS = 400

# Common English words; with a leading space almost every one is a single token in the usual
# BPE/SentencePiece vocabularies. Synthetic prompts are seeded draws from this list.
VOCAB = tuple(dict.fromkeys("""
the of and to in is was for that on with as by at from his it an were are which this be
has had not but have one their its first new after who they been two her more all time
when other there into she year over can most only also some would than three him about
up may these made out under then state many city world known such during later where
through school both between while four well used life part before people same being
five each since group work large long back name until early area old several family
second because three late high number last north south east west found began very
called team season film under home set game will series based including year great
west part took small good against local like house what around main power place end
work public family place war light water land still river way government near order
line just both main often form music book party children major now team left second
sound play short field head king own among much best common late point right open
road days body story member side even every near age few human hand young white black
red green blue color city village town country island lake sea hill forest garden
street road bridge tower wall door window table chair paper letter word page book
""".split()))



def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (work_root(), Path.cwd()):
        if (base / p).is_file():
            return base / p
    return work_root() / p


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (data sets; model files, aifb.services.llamacpp)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Prompt:
    text: str
    max_tokens: int
    prefix: str | None = None                         # a shared system prompt (shared_prefix)
    history: list = field(default_factory=list)        # earlier turns, as sent and answered


@dataclass
class LLMWorkload:
    """The recipe's `workload:` for the LLM kinds (one shape for vllm, ollama, llamacpp; see
    workflow/schemas/workloads/vllm.schema.yaml)."""

    api: str = "openai-chat"
    model: str | None = None
    stream: bool = True
    source: str = "synthetic"
    input_tokens: Lengths | None = None
    output_tokens: Lengths | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float = 0.0
    path: str | None = None
    sha256: str | None = None
    limit: int | None = None
    shuffle: bool = True
    extra_body: dict = field(default_factory=dict)
    keep_alive: str | None = None
    goodput: dict | None = None
    request_id_header: str | None = "X-Request-Id"
    shared_prefix: SharedPrefix | None = None
    cache: str = "cold"
    turns: tuple[int, int] = (1, 1)
    think_time_s: float = 0.0
    batch_size: int = 1

    @classmethod
    def parse(cls, workload: dict | None, kind: str, apis: tuple[str, ...]) -> "LLMWorkload":
        wl = dict(workload or {})
        api = wl.get("api", "openai-chat")
        if api not in apis:
            raise ServiceError(f"workload.api {api!r} is not available for service kind {kind!r} "
                               f"(available: {', '.join(apis)})")
        prompts = dict(wl.get("prompts") or {})
        source = prompts.get("source", "synthetic")
        if source not in ("synthetic", "sharegpt", "jsonl", "trace"):
            raise ServiceError(f"workload.prompts.source {source!r}: use synthetic, sharegpt, "
                               "jsonl or trace")
        input_tokens = Lengths.parse(prompts.get("input_tokens", 128 if source == "synthetic"
                                                 else None), "prompts.input_tokens")
        output_tokens = Lengths.parse(prompts.get("output_tokens"), "prompts.output_tokens")
        if source != "synthetic" and not prompts.get("path"):
            raise ServiceError(f"workload.prompts.path: a {source} data set needs a file path")
        max_tokens = wl.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ServiceError(f"workload.max_tokens: expected a positive integer, got {max_tokens!r}")
        extra = wl.get("extra_body") or {}
        if not isinstance(extra, dict):
            raise ServiceError("workload.extra_body: expected a mapping of request fields")
        rid_header = wl.get("request_id_header", True)
        if rid_header is True:
            rid_header = "X-Request-Id"
        elif rid_header is False or rid_header is None:
            rid_header = None
        elif not isinstance(rid_header, str) or not rid_header.strip() or any(
                c in rid_header for c in ": \t\r\n"):
            raise ServiceError(f"workload.request_id_header: expected an HTTP header name, true "
                               f"or false, got {rid_header!r}")
        return cls(api=api, model=wl.get("model"), stream=bool(wl.get("stream", True)),
                   source=source, input_tokens=input_tokens if source == "synthetic" else None,
                   output_tokens=output_tokens, max_tokens=max_tokens,
                   ignore_eos=bool(wl.get("ignore_eos", False)),
                   temperature=float(wl.get("temperature", 0.0)), path=prompts.get("path"),
                   sha256=prompts.get("sha256"), limit=prompts.get("limit"),
                   shuffle=bool(prompts.get("shuffle", True)), extra_body=dict(extra),
                   keep_alive=wl.get("keep_alive"), goodput=wl.get("goodput"),
                   request_id_header=rid_header,
                   shared_prefix=SharedPrefix.parse(wl.get("shared_prefix")),
                   cache=parse_cache(wl.get("cache")), turns=parse_turns(wl.get("turns")),
                   think_time_s=parse_think_time(wl.get("think_time")),
                   batch_size=_positive_int(wl.get("batch_size", 1), "batch_size"))

    @property
    def chat(self) -> bool:
        return self.api.endswith("chat")

    @property
    def embeddings(self) -> bool:
        return self.api in EMBED_APIS


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ServiceError(f"workload.{name}: expected a positive integer, got {value!r}")
    return value


class PromptSource:
    """Seeded prompts with their requested output length.

    synthetic: words drawn from VOCAB; the word count per prompt is input_tokens / r, where r
    (tokens per word) is measured with the server's /tokenize where it has one, else taken as 1.
    sharegpt: the first human turn of each conversation is the prompt; the output length is
    prompts.output_tokens when given, else the first reply's length estimated as chars / 4.
    jsonl: one prompt per line, {"prompt": "...", "output_tokens": N} (or a bare JSON string).

    Each worker has its own generator (seeded by the client's seed and the worker), so a run
    repeats its prompts exactly; data-set prompts go round in a seeded order per client.
    """

    def __init__(self, wl: LLMWorkload, seed: int):
        self.wl = wl
        self.seed = seed
        self.tokens_per_word = 1.0
        self.calibration = "assumed 1 token per word (no tokenize endpoint)"
        self.items: list[Prompt] = []
        self.dataset: dict | None = None
        self._rngs: dict = {}
        self._next = 0
        self.trace: list[dict] | None = None
        self.client, self.clients = 0, 1
        self._blocks: dict[int, str] = {}

    # -- data sets ----------------------------------------------------------------------
    def load(self) -> None:
        wl = self.wl
        if wl.source == "synthetic":
            return
        path = resolve_path(wl.path)
        if not path.is_file():
            raise ServiceError(f"workload.prompts.path: {wl.path} not found (looked in {path})")
        digest = sha256_file(path)
        if wl.sha256 and wl.sha256.lower().removeprefix("sha256:") != digest:
            raise ServiceError(f"workload.prompts.path: {path} has sha256 {digest}, but the "
                               f"recipe expects {wl.sha256}: the data set changed")
        if wl.source == "trace":
            try:
                self.trace = read_trace(path)
            except ConfigError as exc:
                raise ServiceError(f"workload.prompts.path: {exc}") from None
            self.dataset = {"path": str(path), "format": "trace", "sha256": digest,
                            "bytes": path.stat().st_size, "prompts_in_file": len(self.trace),
                            "prompts_used": len(self.trace), "shuffled": False,
                            "output_length": "from the trace"}
            return
        try:
            items = (self._sharegpt(path) if wl.source == "sharegpt" else self._jsonl(path))
        except (ValueError, TypeError, KeyError) as exc:
            raise ServiceError(f"workload.prompts.path: {path} is not a {wl.source} file: "
                               f"{str(exc)[:200]}") from None
        total = len(items)
        if wl.shuffle:
            random.Random(f"aifb-llm-dataset:{self.seed}").shuffle(items)
        if wl.limit:
            items = items[:int(wl.limit)]
        if not items:
            raise ServiceError(f"workload.prompts.path: {path} holds no usable prompt")
        self.items = items
        self.dataset = {"path": str(path), "format": wl.source, "sha256": digest,
                        "bytes": path.stat().st_size, "prompts_in_file": total,
                        "prompts_used": len(items), "shuffled": wl.shuffle,
                        "output_length": ("workload.prompts.output_tokens" if wl.output_tokens
                                          else "from the data set")}

    def _out_len(self, rng: random.Random, own: int | None) -> int:
        wl = self.wl
        if wl.output_tokens:
            n = wl.output_tokens.draw(rng)
        elif own:
            n = own
        else:
            n = wl.max_tokens or DEFAULT_MAX_TOKENS
        if wl.max_tokens:
            n = min(n, wl.max_tokens)
        return max(1, n)

    def _sharegpt(self, path: Path) -> list[Prompt]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError("expected a JSON list of conversations")
        rng = random.Random(f"aifb-llm-sharegpt:{self.seed}")
        items = []
        for conv in data:
            turns = conv.get("conversations") if isinstance(conv, dict) else None
            if not turns or len(turns) < 2:
                continue
            first, reply = turns[0], turns[1]
            if first.get("from") not in ("human", "user") or not first.get("value"):
                continue
            own = max(1, math.ceil(len(reply.get("value") or "") / CHARS_PER_TOKEN))
            items.append(Prompt(first["value"], self._out_len(rng, own)))
        return items

    def _jsonl(self, path: Path) -> list[Prompt]:
        rng = random.Random(f"aifb-llm-jsonl:{self.seed}")
        items = []
        for n, obj in iter_jsonl(path):
            if isinstance(obj, str):
                text, own = obj, None
            elif isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
                text = obj["prompt"]
                own = obj.get("output_tokens") or obj.get("max_tokens")
            else:
                raise ValueError(f"line {n}: expected {{\"prompt\": \"...\"}} or a string")
            if text:
                items.append(Prompt(text, self._out_len(rng, own)))
        return items

    # -- per request ------------------------------------------------------------------
    def next(self, worker: int) -> Prompt:
        rng = self._rngs.get(worker)
        if rng is None:
            rng = self._rngs[worker] = random.Random(f"aifb-llm:{self.seed}:{worker}")
        if self.trace is not None:
            return self._trace_prompt(rng)
        sp = self.wl.shared_prefix
        prefix = None
        if sp is not None:
            group = sp.pick(rng)
            if group is not None:
                prefix = sp.text(group, self.tokens_per_word, VOCAB)
        if self.items:
            item = self.items[self._next % len(self.items)]
            self._next += 1
            return item if prefix is None else Prompt(item.text, item.max_tokens, prefix)
        n_in = self.wl.input_tokens.draw(rng)
        # cache: cold puts the run's salt (one word) first: the prompt is one word shorter
        salt_words = 1 if self.wl.cache == "cold" and prefix is None else 0
        words = max(1, round(n_in / self.tokens_per_word) - salt_words)
        choice = rng.choice
        text = " ".join([choice(VOCAB) for _ in range(words)])
        return Prompt(text, self._out_len(rng, None), prefix)

    def _trace_prompt(self, rng: random.Random) -> Prompt:
        """This client's next trace request (requests client, client + clients, ...; round
        again after the end): input_length tokens - the seeded text of each of its hash_ids'
        blocks, so requests sharing hash ids share that prefix - and output_length."""
        idx = (self.client + self._next * self.clients) % len(self.trace)
        self._next += 1
        r = self.trace[idx]
        words = max(1, round(r["input_length"] / self.tokens_per_word)
                    - (1 if self.wl.cache == "cold" else 0))
        parts: list[str] = []
        for h in r["hash_ids"]:
            block = self._blocks.get(h)
            if block is None:
                brng = random.Random(f"aifb-trace-block:{h}")
                n = max(1, round(BLOCK_TOKENS / self.tokens_per_word))
                block = self._blocks[h] = " ".join(brng.choice(VOCAB) for _ in range(n))
            parts.append(block)
        text = " ".join(parts).split(" ")[:words] if parts else []
        text += [rng.choice(VOCAB) for _ in range(words - len(text))]
        out = r["output_length"]
        if self.wl.max_tokens:
            out = min(out, self.wl.max_tokens)
        return Prompt(" ".join(text), out)

    def turns_rng(self, worker: int) -> random.Random:
        """The worker's draws of conversation lengths (apart from the prompts' draws)."""
        rng = self._rngs.get(("turns", worker))
        if rng is None:
            rng = self._rngs[("turns", worker)] = random.Random(f"aifb-llm-turns:{self.seed}:{worker}")
        return rng

    def prefixes(self) -> list[str]:
        """Every shared prefix's text (cache: warm sends each once before measuring)."""
        sp = self.wl.shared_prefix
        return [sp.text(g, self.tokens_per_word, VOCAB) for g in range(sp.groups)] if sp else []

    def calibration_text(self) -> str:
        rng = random.Random(f"aifb-llm-calibration:{self.seed}")
        return " ".join(rng.choice(VOCAB) for _ in range(CALIBRATION_WORDS))

    def describe(self) -> dict:
        wl = self.wl
        out = {"source": wl.source, "max_tokens_cap": wl.max_tokens,
               "output_tokens": wl.output_tokens.describe() if wl.output_tokens else None}
        if wl.source == "synthetic":
            out.update({"input_tokens": wl.input_tokens.describe(),
                        "generator": f"seeded words from a {len(VOCAB)}-word list",
                        "tokens_per_word": round(self.tokens_per_word, 4),
                        "calibration": self.calibration})
        else:
            out["dataset"] = self.dataset
        return out



def with_prompt_facts(out: dict, prompts: "PromptSource", wl: LLMWorkload, notes: list,
                      cache: dict | None = None) -> dict:
    """describe() of an LLM client: add the data set's hash, the goodput SLOs and the notes."""
    out["request_id_header"] = wl.request_id_header
    out["cache"] = cache
    if wl.turns != (1, 1):
        out["conversations"] = {"turns": list(wl.turns), "think_time_s": wl.think_time_s,
                                "history": "each turn sends the whole conversation: earlier "
                                           "user messages and the assistant's actual replies"}
    if prompts.dataset:
        out["dataset_sha256"] = prompts.dataset["sha256"]
    if wl.goodput:
        out["goodput"] = wl.goodput
    if notes:
        out["notes"] = list(notes)
    return out
