"""A pipeline of services (retrieval-augmented generation) as one client the load engine drives.

One pipeline request runs the recipe's `workload.stages` in order, each through the existing
client of its service's kind, on the same worker index (each stage client holds `concurrency`
connections, like a single-service run):

    embed   the question's embedding (llamacpp started with --embedding, vllm:
            LLMHttpClient.embed, POST /v1/embeddings)
    query   top-k vector search (chroma: VectorHttpClient.search): with the embed stage's
            vector, or else a seeded query of the corpus's query set; its ids are the retrieved
            documents, its recall@k is scored against the exact top-k
    mget    the documents' text by id (redis: RedisClient.mget)
    chat    a chat completion (llamacpp, vllm: LLMHttpClient.build_text + request) whose prompt
            holds the fetched documents and the question

The request's result is one record (op "pipeline"): t_start when the first stage is sent,
t_end the last stage's, t_first the chat stage's first token, and `stages: {name: {t_start,
t_end, ok, error, ...}}` on the same clock (aifb.records writes their times as seconds since
t0). A failed stage fails the request: its error type, and a message that starts with
"stage <name>:"; `failed_stage` names it and the later stages are not run.

The corpus (seeded, loaded by prepare() on client 0): document i has a seeded text of
`corpus.words` words, stored under the redis key of index i, and as its vector either its
embedding by the embed stage's service (with an embed stage: the retrieved text is then
relevant to the question) or the vector i of the vector client's seeded data set
(aifb.clients.vector.common). The run's services and their
endpoints come in the workload (`endpoints`, by service name) and the secrets by service name,
so worker processes and Slurm client jobs build it like any other kind.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np

from aifb.clients import get_client, register
from aifb.clients.base import (R_ERR_MSG, R_ERR_TYPE, R_OK, R_T_END, R_T_FIRST, CoroutineClient,
                               RequestError, error_result)
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.pipeline_stages import corpus, stage_problems, stage_workload
from aifb.units import parse_duration

WORDS = ("cluster node memory storage latency throughput vector index cache model token "
         "request service network queue batch shard replica query document answer prompt "
         "energy power cooling rack partition scheduler job budget quota tenant").split()
PROMPT = ("Answer the question using only the documents.\n\n{docs}\n\nQuestion: {question}\n"
          "Answer:")


def document_text(i: int, words: int, seed: int) -> str:
    rnd = random.Random(f"aifb-doc:{seed}:{i}")
    return f"Document {i}: " + " ".join(rnd.choice(WORDS) for _ in range(words))


def question_text(qi: int, seed: int) -> str:
    rnd = random.Random(f"aifb-question:{seed}:{qi}")
    return "What do the documents say about " + " and ".join(rnd.sample(WORDS, 2)) + "?"


class Stage:
    __slots__ = ("name", "op", "service", "input", "timeout_s", "client")

    def __init__(self, spec: dict, client):
        self.name, self.op, self.service = spec["name"], spec["op"], spec["service"]
        self.input = spec.get("input")
        self.timeout_s = parse_duration(spec["timeout"]) if spec.get("timeout") else None
        self.client = client


@register("pipeline")
class PipelineClient(CoroutineClient):
    """workload: the pipeline's (stages, corpus) plus `endpoints` {service name: endpoint} and
    `kinds` {service name: kind}; secrets: {service name: that service's secrets}."""

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        services = {n: {"kind": k} for n, k in (workload.get("kinds") or {}).items()}
        problems = stage_problems(workload, services)
        if problems:
            raise ServiceError("pipeline: " + "; ".join(problems))
        self.corpus = corpus(workload)
        self.stages: list[Stage] = []
        for spec in workload["stages"]:
            kind = services[spec["service"]]["kind"]
            url = (workload.get("endpoints") or {}).get(spec["service"])
            if not url:
                raise ServiceError(f"pipeline: no endpoint for service {spec['service']!r}")
            client = get_client(kind)(url, stage_workload(spec, workload), seed,
                                      (secrets or {}).get(spec["service"]))
            self.stages.append(Stage(spec, client))
        self.by_op = {st.op: st for st in self.stages}
        if "query" not in self.by_op:
            raise ServiceError("pipeline: a pipeline needs a query stage (the question's source)")
        self._len_rng = random.Random(f"aifb-pipeline-len:{seed}")
        self._clients = list({id(st.client): st.client for st in self.stages}.values())

    # -- lifecycle: every stage client ----------------------------------------------------
    def identify(self, benchmark_id: str, client: int, salt: str, clients: int = 1) -> None:
        for c in self._clients:
            if hasattr(c, "identify"):
                c.identify(benchmark_id, client, salt, clients=clients)

    async def startup(self, connections: int) -> None:
        for c in self._clients:
            await c.startup(connections)

    async def validate(self) -> None:
        for c in self._clients:
            await c.validate()

    async def prepare(self) -> None:
        """The corpus: the vectors (the query client's own seeded preload, or with an embed
        stage the documents' embeddings), the documents' text (SET on the mget stage's
        service); then each other stage client's own check."""
        c = self.corpus
        texts = [document_text(i, c["words"], c["seed"]) for i in range(c["documents"])]
        for st in self.stages:
            if st.op == "mget":
                await st.client.set_many([(st.client.key(i), t.encode())
                                          for i, t in enumerate(texts)])
            elif st.op == "query" and "embed" in self.by_op:
                await self._embedded_corpus(texts)
            else:
                await st.client.prepare()

    async def _embedded_corpus(self, texts: list[str]) -> None:
        """With an embed stage: the documents and the questions embedded by its service, the
        documents loaded into the collection, and each question's exact top-k (cosine, numpy)
        kept for the recall of its request (in this process; other load processes record
        none)."""
        embed, query = self.by_op["embed"].client, self.by_op["query"].client
        x = await _embed_all(embed, texts)
        q = await _embed_all(embed, [question_text(i, self.corpus["seed"])
                                     for i in range(self.corpus["queries"])])
        await query.load_vectors(x)
        k = min(query.wl.k, len(x))
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        top = np.argpartition(-(qn @ xn.T), k - 1, axis=1)[:, :k]
        _TRUTH[(query.base, query.wl.collection)] = [set(map(int, row)) for row in top]

    async def shutdown(self) -> None:
        for c in self._clients:
            try:
                await c.shutdown()
            except Exception:
                pass

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        return None  # each service is probed by its own kind when it is deployed

    def describe(self) -> dict:
        return {"kind": "pipeline",
                "implementation": "the stages in order, each through its kind's aifb client",
                "corpus": self.corpus,
                "stages": [{"name": st.name, "op": st.op, "service": st.service,
                            "input": st.input, "timeout_s": st.timeout_s,
                            "client": st.client.describe()}
                           for st in self.stages]}

    def abort(self, worker: int) -> str | None:
        """A timed-out request: each stage client drops the worker's connection (its reply
        may still come), so connected() is False and the engine reconnects."""
        for c in self._clients:
            try:
                c.abort(worker)
            except (IndexError, KeyError, AttributeError):
                pass
        return super().abort(worker)

    def connected(self, worker: int) -> bool:
        return all(c.connected(worker) for c in self._clients)

    async def reconnect(self, worker: int) -> None:
        for c in self._clients:
            if not c.connected(worker):
                await c.reconnect(worker)

    def _op_name(self, worker: int) -> str:
        return "pipeline"

    # -- one request ---------------------------------------------------------------------
    def build(self, worker: int):
        """The query (its index and encoded body, drawn by the query client) before t_start."""
        return self.by_op["query"].client.build(worker)

    async def request(self, worker: int, req) -> tuple:
        stages: dict = {}
        outputs: dict = {}
        extra: dict = {"stages": stages}
        bytes_out = bytes_in = 0
        t_first = t_end = None
        query = self.by_op["query"].client
        if req[0] == "find":   # the collection's id, looked up once per client (as chroma's own)
            await query.ensure_collection()
            req = query.build(worker)
        qi = req[1]
        for st in self.stages:
            t0 = now_ns()
            try:
                async with asyncio.timeout(st.timeout_s):
                    res, out = await self._stage(st, worker, req, outputs, qi)
            except TimeoutError:
                res, out = error_result(st.op, "Timeout", f"no answer within {st.timeout_s:g} s"), None
            except RequestError as exc:
                res, out = error_result(st.op, exc.type, exc.message), None
            outputs[st.name] = out
            rec = {"t_start": t0, "t_end": res[R_T_END], "ok": bool(res[R_OK]),
                   "error": None if res[R_OK] else {"type": res[R_ERR_TYPE],
                                                     "message": res[R_ERR_MSG] or ""}}
            rec.update(_stage_fields(st, res, out))
            stages[st.name] = rec
            bytes_out += res[4] or 0
            bytes_in += res[5] or 0
            t_end = res[R_T_END]
            if st.op == "chat":
                t_first = res[R_T_FIRST]
            if not res[R_OK]:
                extra["failed_stage"] = st.name
                return ("pipeline", False, res[R_ERR_TYPE],
                        f"stage {st.name}: {res[R_ERR_MSG] or ''}"[:200], bytes_out, bytes_in,
                        t_first, t_end, extra)
        if "recall" in stages.get(self.by_op["query"].name, {}):
            extra["recall"] = stages[self.by_op["query"].name]["recall"]
        return ("pipeline", True, None, None, bytes_out, bytes_in, t_first, t_end, extra)

    def _max_tokens(self, st: Stage) -> int:
        """The chat's output length: prompts.output_tokens drawn (seeded), capped by max_tokens."""
        wl = st.client.wl
        n = wl.output_tokens.draw(self._len_rng) if wl.output_tokens else (wl.max_tokens or 32)
        return max(1, min(n, wl.max_tokens) if wl.max_tokens else n)

    async def _stage(self, st: Stage, worker: int, req, outputs: dict, qi):
        """(result tuple, output for the next stage) of one stage."""
        if st.op == "embed":
            res, vecs = await st.client.embed([question_text(qi, self.corpus["seed"])])
            return res, (vecs[0] if vecs else None)
        if st.op == "query" and st.input:
            vec = np.asarray(outputs[st.input], dtype=np.float32)
            res, ids = await st.client.search(None, st.client.query_body(vec))
            truth = _TRUTH.get((st.client.base, st.client.wl.collection))
            if res[R_OK] and truth is not None:   # recall@k against the exact top-k
                hits = len({int(i) for i in ids} & truth[qi])
                res = (*res[:8], {"recall": hits / len(truth[qi])})
            return res, ids
        if st.op == "query":
            return await st.client.search(req[1], req[2])
        if st.op == "mget":
            ids = outputs.get(st.input) or []
            return await st.client.mget(worker, [st.client.key(int(i)) for i in ids])
        docs = [v.decode("utf-8", "replace") for v in (outputs.get(st.input) or []) if v]
        text = PROMPT.format(docs="\n".join(docs),
                             question=question_text(qi or 0, self.corpus["seed"]))
        result = await st.client.request(worker, st.client.build_text(text, self._max_tokens(st)))
        return result, None


EMBED_BATCH = 16
_TRUTH: dict[tuple, list] = {}   # (vector endpoint, collection) -> exact top-k id sets per question


async def _embed_all(client, texts: list[str]) -> np.ndarray:
    """Embeddings of texts, EMBED_BATCH per request, before the load; ServiceError on failure."""
    out = []
    for start in range(0, len(texts), EMBED_BATCH):
        res, vecs = await client.embed(texts[start:start + EMBED_BATCH])
        if not res[R_OK]:
            raise ServiceError(f"pipeline: embedding the corpus failed: {res[R_ERR_MSG]}")
        out += vecs
    return np.asarray(out, dtype=np.float32)


def _stage_fields(st: Stage, res: tuple, out) -> dict:
    """A stage's own record fields: a query's hits and recall, an mget's hits, a chat's
    t_first and tokens."""
    extra = res[8] if len(res) > 8 and res[8] else {}
    if st.op == "query":
        return {"hits": len(out or []), **({"recall": extra["recall"]} if "recall" in extra else {})}
    if st.op == "mget":
        return {"hits": sum(1 for v in out or [] if v is not None), "keys": len(out or [])}
    if st.op == "embed":
        return {"dimensions": extra.get("dimensions"), "tokens": extra.get("prompt_tokens")}
    return {"t_first": res[R_T_FIRST], "tokens": extra.get("output_tokens"),
            "prompt_tokens": extra.get("prompt_tokens")}
