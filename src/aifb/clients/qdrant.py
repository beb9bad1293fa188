"""Qdrant: top-k vector search (with an optional payload filter) and inserts over Qdrant's REST
API, spoken directly with aiohttp - the same workload, data set, exact top-k and recall as the
Chroma client (aifb.clients.chroma).

REST endpoints used (Qdrant's published OpenAPI, v1.x):

    GET    /readyz                                  readiness (no API key needed)
    GET    /                                        {"title": "qdrant - vector search engine", "version"}
    GET    /collections                             the API key is accepted
    GET    /collections/{name}                      config (vectors size/distance, hnsw), points_count, status
    PUT    /collections/{name}                      create: {"vectors": {"size", "distance"}, "hnsw_config", ...}
    DELETE /collections/{name}                      drop a stale collection
    PUT    /collections/{name}/index                payload index on the filter field
    PUT    /collections/{name}/points?wait=true     upsert points in batches
    POST   /collections/{name}/points/count         exact count
    POST   /collections/{name}/points               read points back (spot check of create: false)
    POST   /collections/{name}/points/query         top-k (Qdrant >= 1.10: {"result": {"points": [...]}})
    POST   /collections/{name}/points/search        top-k on older servers ({"result": [...]})

The API key (service.api_key_env / api_key_file; password_env works too) is sent in the
`api-key` header and never appears in a record, a message or describe(). Ids: the preloaded
vectors are 0..N-1; vectors inserted during the load get UUIDs.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid

import numpy as np

from ..clock import now_ns
from ..errors import ServiceError
from . import register
from .base import CoroutineClient, RequestError
from .chroma import (Dataset, RecallScorer, Scrubber, VectorWorkload, _aiohttp_error, _etype,
                     connection_message, data_rows, dataset_for, f32_json, new_session,
                     parse_http_endpoint, record_fields, secret_from)

DEFAULT_PORT = 6333
ADMIN_TIMEOUT_S = 30.0
PREPARE_TIMEOUT_S = 300.0
DISTANCES = {"cosine": "Cosine", "l2": "Euclid", "ip": "Dot"}
QDRANT_INDEX_KEYS = ("indexing_threshold_kb", "full_scan_threshold_kb", "exact")
QDRANT_EXTRA_KEYS = ("insert_wait", "index_wait_s")


def _canonical(space: str):
    """Qdrant scores -> canonical distances (l2: squared; cosine: 1 - cos; ip: -dot)."""
    if space == "l2":
        return lambda s: None if s is None else s * s
    if space == "cosine":
        return lambda s: None if s is None else 1.0 - s
    return lambda s: None if s is None else -s


def _version_tuple(v) -> tuple:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(v or ""))
    return tuple(int(x or 0) for x in m.groups()) if m else ()


def _is_inserted(i) -> bool:
    return isinstance(i, str)


@register("qdrant")
class QdrantClient(CoroutineClient):
    kind = "qdrant"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self.base, self.label = parse_http_endpoint(endpoint, "qdrant", DEFAULT_PORT)
        self.wl = VectorWorkload(workload, "qdrant", extra_index_keys=QDRANT_INDEX_KEYS,
                                 extra_keys=QDRANT_EXTRA_KEYS)
        self.insert_wait = bool(self.wl.extra.get("insert_wait", True))
        self.index_wait_s = float(self.wl.extra.get("index_wait_s", 120))
        key = secret_from(secrets)
        self._scrub = Scrubber(key)
        self._headers = {"content-type": "application/json"}
        if key:
            self._headers["api-key"] = key
        self.coll_url = f"{self.base}/collections/{self.wl.collection}"
        self._session = None
        self._rnds: list = []
        self._inflight: list = []
        self._ins_rngs: list = []
        self._server: dict = {}
        self._to_canon = _canonical(self.wl.space)
        self._use_query_api = True
        self.ds: Dataset | None = None

    # -- HTTP helpers ---------------------------------------------------------------------
    async def _call(self, method: str, url: str, body=None, timeout: float = ADMIN_TIMEOUT_S,
                    what: str = "request"):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(method, url, data=data) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                raise ServiceError(f"qdrant at {self.label}: no answer to {what} within "
                                   f"{timeout:g} s") from None
            raise ServiceError(connection_message("qdrant", self.label, exc)) from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")[:200]
        if status in (401, 403):
            why = ("an API key is required: set service.api_key_env (or api_key_file)"
                   if not self._scrub.secret else "the API key was rejected")
            raise ServiceError(f"qdrant at {self.label} refused {what} (HTTP {status}): {why}")
        return status, parsed

    def _err(self, parsed) -> str:
        if isinstance(parsed, dict):
            st = parsed.get("status")
            if isinstance(st, dict) and st.get("error"):
                return self._scrub(st["error"])[:300]
            return self._scrub(json.dumps(parsed))[:300]
        return self._scrub(parsed or "no error message")[:300]

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        self._session = new_session(connections, self._headers)
        self._rnds = [random.Random(f"aifb-vector:{self.seed}:{w}").random
                      for w in range(connections)]
        self._inflight = ["query"] * connections
        self._ins_rngs = [np.random.default_rng([self.seed & 0xFFFFFFFF, 0x1A5, w])
                          for w in range(connections)]

    async def validate(self) -> None:
        await self.probe(self.base, ADMIN_TIMEOUT_S, session=self._session)
        st, root = await self._call("GET", f"{self.base}/", what="GET /")
        if st == 200 and isinstance(root, dict):
            self._server["version"] = root.get("version")
            self._server["commit"] = root.get("commit")
        v = _version_tuple(self._server.get("version"))
        self._use_query_api = not v or v >= (1, 10)
        st, body = await self._call("GET", f"{self.base}/collections", what="GET /collections")
        if st != 200:
            raise ServiceError(f"qdrant at {self.label}: GET /collections failed with HTTP {st}: "
                               f"{self._err(body)}")
        if not self.wl.create:
            await self._check_existing()
        self._ensure_dataset()

    async def _get_collection(self) -> dict | None:
        st, body = await self._call("GET", self.coll_url, what="GET collection")
        if st == 404:
            return None
        if st != 200 or not isinstance(body, dict) or not isinstance(body.get("result"), dict):
            raise ServiceError(f"qdrant at {self.label}: GET collection {self.wl.collection!r} "
                               f"failed with HTTP {st}: {self._err(body)}")
        info = body["result"]
        self._server["collection"] = info
        return info

    @staticmethod
    def _vector_params(info: dict) -> dict:
        vectors = (((info.get("config") or {}).get("params") or {}).get("vectors")) or {}
        if "size" not in vectors and len(vectors) == 1:  # named vectors: {"name": {...}}
            vectors = next(iter(vectors.values())) or {}
        return vectors

    async def _check_existing(self) -> None:
        wl = self.wl
        info = await self._get_collection()
        if info is None:
            raise ServiceError(f"qdrant at {self.label}: collection {wl.collection!r} does not "
                               "exist (workload.create is false: create and load it first, or set "
                               "workload.create: true)")
        vp = self._vector_params(info)
        if vp.get("size") is not None and vp["size"] != wl.dimension:
            raise ServiceError(f"qdrant at {self.label}: dimension mismatch: collection "
                               f"{wl.collection!r} holds {vp['size']}-dimensional vectors, the "
                               f"workload says dimension {wl.dimension}")
        if vp.get("distance") and vp["distance"] != DISTANCES[wl.space]:
            raise ServiceError(f"qdrant at {self.label}: collection {wl.collection!r} uses "
                               f"distance {vp['distance']}, the workload says index.space "
                               f"{wl.space!r} ({DISTANCES[wl.space]})")
        count = await self._count()
        if count != wl.vectors:
            raise ServiceError(f"qdrant at {self.label}: collection {wl.collection!r} holds "
                               f"{count} points, the workload says vectors: {wl.vectors} (recall "
                               "needs exactly the seeded data: recreate it with create: true)")
        rows = sorted({0, wl.vectors // 2, wl.vectors - 1})
        st, got = await self._call("POST", f"{self.coll_url}/points",
                                   {"ids": rows, "with_vector": True, "with_payload": False},
                                   what="read points")
        stored = {}
        if st == 200 and isinstance(got, dict):
            stored = {p.get("id"): p.get("vector") for p in got.get("result") or []}
        for i in rows:
            have = stored.get(i)
            if isinstance(have, dict) and len(have) == 1:
                have = next(iter(have.values()))
            want = data_rows(wl, i, i + 1)[0][0].astype(np.float64)
            if wl.space == "cosine":  # Qdrant stores cosine vectors normalised
                want = want / np.linalg.norm(want)
            if have is None or len(have) != wl.dimension or not np.allclose(
                    np.asarray(have, dtype=np.float64), want, rtol=1e-5, atol=1e-6):
                raise ServiceError(f"qdrant at {self.label}: collection {wl.collection!r} does not "
                                   f"hold this workload's seeded data (point {i} differs: another "
                                   "seed, dimension or data set); recreate it with create: true")

    async def _count(self) -> int | None:
        st, body = await self._call("POST", f"{self.coll_url}/points/count", {"exact": True},
                                    what="count")
        if st != 200 or not isinstance(body, dict):
            raise ServiceError(f"qdrant at {self.label}: counting points failed with HTTP {st}: "
                               f"{self._err(body)}")
        return (body.get("result") or {}).get("count")

    def _search_params(self) -> dict:
        params = {}
        if self.wl.index.get("ef_search") is not None:
            params["hnsw_ef"] = int(self.wl.index["ef_search"])
        if self.wl.index.get("exact"):
            params["exact"] = True
        return params

    def _ensure_dataset(self) -> None:
        if self.ds is not None:
            return
        self.ds = dataset_for(self.wl)
        key = ("qdrant", self._use_query_api, json.dumps(self._search_params(), sort_keys=True))
        cache = self.ds.encoded.get(key)
        if cache is None:
            params = self._search_params()
            tail = f',"params":{json.dumps(params, separators=(",", ":"))}' if params else ""
            field = "query" if self._use_query_api else "vector"
            bodies = []
            for qi, q in enumerate(self.ds.queries):
                flt = ""
                if self.ds.filters is not None:
                    flt = (f',"filter":{{"must":[{{"key":"{self.wl.filter_field}","match":'
                           f'{{"value":{int(self.ds.filters[qi])}}}}}]}}')
                bodies.append((f'{{"{field}":{f32_json(q)},"limit":{self.wl.k},'
                               f'"with_payload":false{flt}{tail}}}').encode())
            cache = self.ds.encoded[key] = (bodies, RecallScorer(self.ds.truth, int))
        self._bodies, self._scorer = cache

    async def prepare(self) -> None:
        wl = self.wl
        if not wl.create:
            return
        t0 = now_ns()
        st, body = await self._call("DELETE", self.coll_url, what="DELETE stale collection")
        if st not in (200, 404):
            raise ServiceError(f"qdrant at {self.label}: deleting the stale collection "
                               f"{wl.collection!r} failed with HTTP {st}: {self._err(body)}")
        create = {"vectors": {"size": wl.dimension, "distance": DISTANCES[wl.space]}}
        hnsw = {}
        if wl.index.get("M") is not None:
            hnsw["m"] = int(wl.index["M"])
        if wl.index.get("construction_ef") is not None:
            hnsw["ef_construct"] = int(wl.index["construction_ef"])
        if wl.index.get("full_scan_threshold_kb") is not None:
            hnsw["full_scan_threshold"] = int(wl.index["full_scan_threshold_kb"])
        if hnsw:
            create["hnsw_config"] = hnsw
        if wl.index.get("indexing_threshold_kb") is not None:
            create["optimizers_config"] = {"indexing_threshold": int(wl.index["indexing_threshold_kb"])}
        st, body = await self._call("PUT", self.coll_url, create, what="create collection")
        if st != 200:
            raise ServiceError(f"qdrant at {self.label}: creating collection {wl.collection!r} "
                               f"failed with HTTP {st}: {self._err(body)}")
        if wl.filter_field:
            st, body = await self._call("PUT", f"{self.coll_url}/index?wait=true",
                                        {"field_name": wl.filter_field, "field_schema": "integer"},
                                        what="create payload index")
            if st != 200:
                raise ServiceError(f"qdrant at {self.label}: creating the payload index on "
                                   f"{wl.filter_field!r} failed with HTTP {st}: {self._err(body)}")
        for start in range(0, wl.vectors, wl.batch_size):
            stop = min(start + wl.batch_size, wl.vectors)
            x, cats = data_rows(wl, start, stop)
            pts = []
            for j, i in enumerate(range(start, stop)):
                p = f'{{"id":{i},"vector":{f32_json(x[j])}'
                if cats is not None:
                    p += f',"payload":{{"{wl.filter_field}":{int(cats[j])}}}'
                pts.append(p + "}")
            payload = ('{"points":[' + ",".join(pts) + "]}").encode()
            st, body = await self._call("PUT", f"{self.coll_url}/points?wait=true", payload,
                                        timeout=PREPARE_TIMEOUT_S, what="upsert")
            if st != 200:
                msg = self._err(body)
                if "dimension" in msg.lower():
                    raise ServiceError(f"qdrant at {self.label} rejected the vectors: dimension "
                                       f"mismatch (workload dimension {wl.dimension}): {msg}")
                raise ServiceError(f"qdrant at {self.label}: upserting points {start}..{stop - 1} "
                                   f"failed with HTTP {st}: {msg}")
        count = await self._count()
        if count != wl.vectors:
            raise ServiceError(f"qdrant at {self.label}: collection {wl.collection!r} holds "
                               f"{count} points after loading {wl.vectors}")
        await self._wait_indexed()
        self._server["load_s"] = round((now_ns() - t0) / 1e9, 6)

    async def _wait_indexed(self) -> None:
        """Wait until the optimizers are done (status green), so the load does not measure a
        collection that is still building its index."""
        deadline = now_ns() + int(self.index_wait_s * 1e9)
        while True:
            info = await self._get_collection()
            status = (info or {}).get("status")
            if status == "green" or status is None:
                return
            if status == "red":
                raise ServiceError(f"qdrant at {self.label}: collection {self.wl.collection!r} is "
                                   f"red (failed optimisation): {self._err(info)}")
            if now_ns() > deadline:
                raise ServiceError(f"qdrant at {self.label}: collection {self.wl.collection!r} "
                                   f"still {status} (indexing) after {self.index_wait_s:g} s "
                                   "(workload.index_wait_s)")
            await asyncio.sleep(0.2)

    async def shutdown(self) -> None:
        if self._session is not None:
            s, self._session = self._session, None
            try:
                await s.close()
            except Exception:
                pass

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None,
                    session=None) -> None:
        """A real readiness request: GET /readyz (Qdrant exempts it from the API key; the key is
        sent anyway when known, for servers or proxies that want it)."""
        base, label = parse_http_endpoint(endpoint, "qdrant", DEFAULT_PORT)
        own = session is None
        if own:
            key = secret_from(secrets)
            session = new_session(1, {"api-key": key} if key else None)
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    async with session.get(f"{base}/readyz") as resp:
                        raw = await resp.read()
                        status = resp.status
            except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    raise ServiceError(f"qdrant at {label} did not answer GET /readyz within "
                                       f"{timeout_s:g} s") from None
                raise ServiceError(connection_message("qdrant", label, exc)) from None
            if status != 200:
                raise ServiceError(f"qdrant at {label} is not ready: GET /readyz answered HTTP "
                                   f"{status} {raw[:80]!r}")
        finally:
            if own:
                await session.close()

    def describe(self) -> dict:
        info = self._server.get("collection") or {}
        cfg = info.get("config") or {}
        hnsw = cfg.get("hnsw_config") or {}
        vp = self._vector_params(info) if info else {}
        return {
            "kind": "qdrant",
            "protocol": "Qdrant REST API (JSON over HTTP/1.1)",
            "implementation": ("aifb aiohttp client (no qdrant-client): keep-alive pool of "
                               "`concurrency` connections per client, pre-encoded query bodies, "
                               "t_end when the response body is read, parsing after"),
            "endpoint": self.base,
            "server_version": self._server.get("version"),
            "search_api": "POST /points/query" if self._use_query_api else "POST /points/search",
            **self.wl.describe(),
            "index_reported": {"space": vp.get("distance"), "ef_search": self.wl.index.get("ef_search"),
                               "construction_ef": hnsw.get("ef_construct"), "M": hnsw.get("m"),
                               "full_scan_threshold_kb": hnsw.get("full_scan_threshold"),
                               "indexing_threshold_kb": (cfg.get("optimizer_config") or {}).get(
                                   "indexing_threshold"),
                               "indexed_vectors_count": info.get("indexed_vectors_count"),
                               "points_count": info.get("points_count"),
                               "status": info.get("status")},
            "dimension_reported": vp.get("size"),
            "insert_wait": self.insert_wait,
            "load_s": self._server.get("load_s"),
            "ground_truth": {"method": "brute force, numpy float64, same data, metric and filter",
                             "seconds": round(self.ds.truth_s, 6) if self.ds else None},
            "recall": ("|returned top-k ∩ exact top-k| / min(k, matching vectors) per query; a "
                       "vector inserted during the load counts when its distance is within the "
                       "exact k-th distance"),
            "bytes": "HTTP request / response body sizes",
            "auth": "api-key" if self._scrub.secret else None,
        }

    # -- per request --------------------------------------------------------------------------
    def _op_name(self, worker: int) -> str:
        return self._inflight[worker] if worker < len(self._inflight) else "query"

    async def request(self, worker: int):
        if self.wl.p_query >= 1.0 or self._rnds[worker]() < self.wl.p_query:
            return await self._query(worker)
        return await self._insert(worker)

    async def _query(self, worker: int):
        self._inflight[worker] = "query"
        qi = int(self._rnds[worker]() * len(self._bodies))
        body = self._bodies[qi]
        url = f"{self.coll_url}/points/query" if self._use_query_api else f"{self.coll_url}/points/search"
        try:
            async with self._session.post(url, data=body) as resp:
                raw = await resp.read()
                t_end = now_ns()
                status = resp.status
        except _aiohttp_error() as exc:
            raise RequestError(_etype(exc), connection_message("qdrant", self.label, exc)) from None
        if status != 200:
            return self._http_error("query", status, raw, len(body), t_end)
        try:
            result = json.loads(raw)["result"]
            points = result["points"] if isinstance(result, dict) else result
            ids = [p["id"] for p in points]
            dists = [self._to_canon(p.get("score")) for p in points]
        except (ValueError, KeyError, TypeError):
            return ("query", False, "ProtocolError", "unexpected query reply from qdrant",
                    len(body), len(raw), None, t_end)
        recall, inserted = self._scorer.score(qi, ids, dists, _is_inserted)
        return ("query", True, None, None, len(body), len(raw), None, t_end,
                record_fields(qi, recall, inserted))

    async def _insert(self, worker: int):
        self._inflight[worker] = "insert"
        wl = self.wl
        rng = self._ins_rngs[worker]
        x = rng.standard_normal((wl.insert_batch, wl.dimension), dtype=np.float32)
        cats = rng.integers(0, wl.filter_values, wl.insert_batch) if wl.filter_values else None
        pts = []
        for j in range(wl.insert_batch):
            p = f'{{"id":"{uuid.uuid4()}","vector":{f32_json(x[j])}'
            if cats is not None:
                p += f',"payload":{{"{wl.filter_field}":{int(cats[j])}}}'
            pts.append(p + "}")
        body = ('{"points":[' + ",".join(pts) + "]}").encode()
        url = f"{self.coll_url}/points?wait={'true' if self.insert_wait else 'false'}"
        try:
            async with self._session.put(url, data=body) as resp:
                raw = await resp.read()
                t_end = now_ns()
                status = resp.status
        except _aiohttp_error() as exc:
            raise RequestError(_etype(exc), connection_message("qdrant", self.label, exc)) from None
        if status != 200:
            return self._http_error("insert", status, raw, len(body), t_end)
        return ("insert", True, None, None, len(body), len(raw), None, t_end)

    def _http_error(self, op: str, status: int, raw: bytes, bytes_out: int, t_end: int):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")[:120]
        etype = {401: "AuthError", 403: "AuthError", 404: "NotFound", 429: "RateLimited"}.get(
            status, f"HTTP{status}")
        return (op, False, etype, f"HTTP {status}: {self._err(parsed)}"[:200], bytes_out, len(raw),
                None, t_end)
