"""Qdrant: top-k vector search (with an optional payload filter) and inserts over Qdrant's REST
API, spoken directly with aiohttp on the request path the Chroma client uses, with the same
workload, data set, exact top-k and recall (aifb.clients.vector.common).

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
import re
import uuid

import numpy as np

from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.clients import register
from aifb.clients.vector.common import (PREPARE_TIMEOUT_S, VectorHttpClient, data_rows, f32_json,
                                        reply_json)

DEFAULT_PORT = 6333
DISTANCES = {"cosine": "Cosine", "l2": "Euclid", "ip": "Dot"}
QDRANT_INDEX_KEYS = ("indexing_threshold_kb", "full_scan_threshold_kb", "exact")
QDRANT_EXTRA_KEYS = ("insert_wait", "index_wait_s")


def _version_tuple(v) -> tuple:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(v or ""))
    return tuple(int(x or 0) for x in m.groups()) if m else ()


@register("qdrant")
class QdrantClient(VectorHttpClient):
    kind = "qdrant"
    id_type = int
    default_port = DEFAULT_PORT
    probe_path = "/readyz"
    protocol = "Qdrant REST API (JSON over HTTP/1.1)"
    library = "qdrant-client"
    insert_ok = (200,)

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets, extra_index_keys=QDRANT_INDEX_KEYS,
                         extra_keys=QDRANT_EXTRA_KEYS)
        self.insert_wait = bool(self.wl.extra.get("insert_wait", True))
        self.index_wait_s = float(self.wl.extra.get("index_wait_s", 120))
        self.coll_url = f"{self.base}/collections/{self.wl.collection}"
        self._use_query_api = True

    # -- what differs from Chroma ------------------------------------------------------------
    @staticmethod
    def auth_headers(secret: str | None) -> dict:
        # Qdrant exempts /readyz from the API key; the key is sent anyway when known, for
        # servers or proxies that want it.
        return {"api-key": secret} if secret else {}

    @classmethod
    def check_probe(cls, label: str, status: int, raw: bytes) -> None:
        if status != 200:
            raise ServiceError(f"qdrant at {label} is not ready: GET /readyz answered HTTP "
                               f"{status} {raw[:80]!r}")

    @staticmethod
    def canonical(space: str):
        """Qdrant scores -> canonical distances (l2: squared; cosine: 1 - cos; ip: -dot)."""
        if space == "l2":
            return lambda s: None if s is None else s * s
        if space == "cosine":
            return lambda s: None if s is None else 1.0 - s
        return lambda s: None if s is None else -s

    def _refused(self, status: int, what: str) -> str:
        why = ("an API key is required: set service.api_key_env (or api_key_file)"
               if not self.secret else "the API key was rejected")
        return f"qdrant at {self.label} refused {what} (HTTP {status}): {why}"

    def _err(self, parsed) -> str:
        if isinstance(parsed, dict):
            st = parsed.get("status")
            if isinstance(st, dict) and st.get("error"):
                return self.scrub(st["error"])[:300]
            return self.scrub(json.dumps(parsed))[:300]
        return self.scrub(parsed or "no error message")[:300]

    def _error_type(self, status: int, parsed) -> str:
        return {401: "AuthError", 403: "AuthError", 404: "NotFound", 429: "RateLimited"}.get(
            status, f"HTTP{status}")

    def _query_url(self) -> str:
        return f"{self.coll_url}/points/{'query' if self._use_query_api else 'search'}"

    def _parse_query(self, raw: bytes) -> tuple[list, list | None]:
        result = reply_json(raw)["result"]
        points = result["points"] if isinstance(result, dict) else result
        return [p["id"] for p in points], [self._to_canon(p.get("score")) for p in points]

    def _is_inserted(self, i) -> bool:
        return isinstance(i, str)   # preloaded points are 0..N-1, inserted ones UUIDs

    def _insert_request(self, worker: int, x: np.ndarray, cats) -> tuple[str, str, bytes]:
        pts = []
        for j in range(len(x)):
            p = f'{{"id":"{uuid.uuid4()}","vector":{f32_json(x[j])}'
            if cats is not None:
                p += f',"payload":{{"{self.wl.filter_field}":{int(cats[j])}}}'
            pts.append(p + "}")
        url = f"{self.coll_url}/points?wait={'true' if self.insert_wait else 'false'}"
        return "PUT", url, ('{"points":[' + ",".join(pts) + "]}").encode()

    # -- lifecycle --------------------------------------------------------------------------
    async def _check_server(self) -> None:
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

    def _query_encoding(self):
        params = self._search_params()
        key = ("qdrant", self._use_query_api, json.dumps(params, sort_keys=True))
        tail = f',"params":{json.dumps(params, separators=(",", ":"))}' if params else ""
        field = "query" if self._use_query_api else "vector"
        k, filter_field = self.wl.k, self.wl.filter_field

        def encode(q, category: int | None) -> bytes:
            flt = ("" if category is None else f',"filter":{{"must":[{{"key":"{filter_field}",'
                   f'"match":{{"value":{category}}}}}]}}')
            return (f'{{"{field}":{f32_json(q)},"limit":{k},'
                    f'"with_payload":false{flt}{tail}}}').encode()
        return key, encode

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

    def describe(self) -> dict:
        info = self._server.get("collection") or {}
        cfg = info.get("config") or {}
        hnsw = cfg.get("hnsw_config") or {}
        vp = self._vector_params(info) if info else {}
        return {
            **super().describe(),
            "server_version": self._server.get("version"),
            "search_api": "POST /points/query" if self._use_query_api else "POST /points/search",
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
            "auth": "api-key" if self.secret else None,
        }
