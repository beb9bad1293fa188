"""ChromaDB: top-k vector search and inserts over Chroma's HTTP API v2, spoken directly with aiohttp.

Why not chromadb's own HttpClient: it is synchronous (httpx) or wraps every call in pydantic
models and telemetry spans; a load generator wants a keep-alive pool sized to the concurrency
and nothing on the request path but one POST of pre-encoded bytes (aifb.clients.vector.common holds
that request path, the workload, the exact top-k and recall, shared with the Qdrant client).

API v2 paths used (checked against chromadb 1.5's server, GET /openapi.json):

    GET    /api/v2/heartbeat                                        readiness / reachability
    GET    /api/v2/version, /api/v2/pre-flight-checks               server version, max batch size
    GET    /api/v2/tenants/{t}/databases/{db}                       the database exists
    GET    /api/v2/tenants/{t}/databases/{db}/collections/{name}    collection by name (id, config, dimension)
    POST   /api/v2/tenants/{t}/databases/{db}/collections           create (with hnsw configuration)
    DELETE /api/v2/tenants/{t}/databases/{db}/collections/{name}    drop a stale collection
    POST   .../collections/{id}/add | /query | /get, GET .../count

Endpoints: http(s)://host:port. A token (service.api_key_env / api_key_file, or password_env)
is sent as `x-chroma-token` and `Authorization: Bearer`, never shown. Ids: the preloaded vectors
are "0".."N-1"; vectors inserted during the load get ids "ins-<nonce>-<worker>-<n>".
"""

from __future__ import annotations

import base64
import json
import uuid

import numpy as np

from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.clients import register
from aifb.clients.base import RequestError
from aifb.clients.vector.common import (PREPARE_TIMEOUT_S, VectorHttpClient, data_rows, f32_json,
                                        reply_json)

DEFAULT_PORT = 8000
CHROMA_EXTRA_KEYS = ("tenant", "database")
INSERTED_PREFIX = "ins-"


@register("chroma")
class ChromaClient(VectorHttpClient):
    kind = "chroma"
    id_type = str
    default_port = DEFAULT_PORT
    probe_path = "/api/v2/heartbeat"
    protocol = "Chroma HTTP API v2 (JSON over HTTP/1.1)"
    library = "chromadb client"
    insert_ok = (200, 201)

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets, extra_keys=CHROMA_EXTRA_KEYS)
        self.tenant = str(self.wl.extra.get("tenant", "default_tenant"))
        self.database = str(self.wl.extra.get("database", "default_database"))
        self.db_url = f"{self.base}/api/v2/tenants/{self.tenant}/databases/{self.database}"
        self._cid: str | None = None
        self._nonce = uuid.uuid4().hex[:12]
        self._ins_n: list = []

    # -- what differs from Qdrant ------------------------------------------------------------
    @staticmethod
    def auth_headers(secret: str | None) -> dict:
        return {"x-chroma-token": secret, "authorization": f"Bearer {secret}"} if secret else {}

    @classmethod
    def check_probe(cls, label: str, status: int, raw: bytes) -> None:
        """GET /api/v2/heartbeat answers {"nanosecond heartbeat": N}."""
        try:
            beat = json.loads(raw)
        except ValueError:
            beat = None
        if status != 200 or not isinstance(beat, dict) or "nanosecond heartbeat" not in beat:
            raise ServiceError(f"{label} answered GET /api/v2/heartbeat with HTTP {status} "
                               f"{raw[:80]!r}: not a Chroma (API v2) server")

    @staticmethod
    def canonical(space: str):
        # Chroma reports l2 as squared L2, cosine as 1 - cos, ip as 1 - dot.
        if space == "ip":
            return lambda d: None if d is None else d - 1.0
        return lambda d: d

    def _refused(self, status: int, what: str) -> str:
        return (f"chroma at {self.label} rejected the credentials ({status}) on {what}: set "
                "service.api_key_env (or api_key_file) to a valid token")

    def _err(self, parsed) -> str:
        if isinstance(parsed, dict):
            return self.scrub(f"{parsed.get('error', 'Error')}: {parsed.get('message', '')}")[:300]
        return self.scrub(parsed or "no error message")[:300]

    def _error_type(self, status: int, parsed) -> str:
        if isinstance(parsed, dict) and parsed.get("error"):
            return str(parsed["error"])
        return f"HTTP{status}"

    def _coll_url(self) -> str:
        return f"{self.db_url}/collections/{self._cid}"

    def _query_url(self) -> str:
        return f"{self._coll_url()}/query"

    def _parse_query(self, raw: bytes) -> tuple[list, list | None]:
        reply = reply_json(raw)
        ids = reply["ids"][0]
        dists = reply.get("distances")
        return ids, ([self._to_canon(d) for d in dists[0]] if dists else None)

    def _is_inserted(self, i) -> bool:
        return isinstance(i, str) and i.startswith(INSERTED_PREFIX)

    def _insert_request(self, worker: int, x: np.ndarray, cats) -> tuple[str, str, bytes]:
        n0 = self._ins_n[worker]
        self._ins_n[worker] = n0 + len(x)
        payload = {"ids": [f"{INSERTED_PREFIX}{self._nonce}-{worker}-{n0 + j}"
                           for j in range(len(x))],
                   "embeddings": self._encode_embeddings(x)}
        if cats is not None:
            payload["metadatas"] = [{self.wl.filter_field: int(c)} for c in cats]
        return "POST", f"{self._coll_url()}/add", json.dumps(payload, separators=(",", ":")).encode()

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        await super().startup(connections)
        self._ins_n = [0] * connections

    async def _check_server(self) -> None:
        st, v = await self._call("GET", f"{self.base}/api/v2/version", what="GET version")
        self._server["api_version"] = v if st == 200 else None
        st, pf = await self._call("GET", f"{self.base}/api/v2/pre-flight-checks",
                                  what="pre-flight checks")
        pf = pf if st == 200 and isinstance(pf, dict) else {}
        self._server["max_batch_size"] = pf.get("max_batch_size")
        self._server["base64"] = bool(pf.get("supports_base64_encoding"))
        st, body = await self._call("GET", self.db_url, what="GET database")
        if st == 404:
            raise ServiceError(f"chroma at {self.label}: database {self.database!r} of tenant "
                               f"{self.tenant!r} does not exist ({self._err(body)})")
        if st != 200:
            raise ServiceError(f"chroma at {self.label}: GET database failed with HTTP {st}: "
                               f"{self._err(body)}")

    async def _get_collection(self) -> dict | None:
        st, body = await self._call("GET", f"{self.db_url}/collections/{self.wl.collection}",
                                    what="GET collection")
        if st == 404:
            return None
        if st != 200 or not isinstance(body, dict):
            raise ServiceError(f"chroma at {self.label}: GET collection {self.wl.collection!r} "
                               f"failed with HTTP {st}: {self._err(body)}")
        return body

    async def _check_existing(self) -> None:
        """create: false - the collection must exist and hold exactly this workload's data."""
        wl = self.wl
        coll = await self._get_collection()
        if coll is None:
            raise ServiceError(f"chroma at {self.label}: collection {wl.collection!r} does not "
                               f"exist in {self.tenant}/{self.database} (workload.create is false: "
                               "create and load it first, or set workload.create: true)")
        self._adopt(coll)
        dim = coll.get("dimension")
        if dim is not None and dim != wl.dimension:
            raise ServiceError(f"chroma at {self.label}: dimension mismatch: collection "
                               f"{wl.collection!r} holds {dim}-dimensional vectors, the workload "
                               f"says dimension {wl.dimension}")
        space = ((coll.get("configuration_json") or {}).get("hnsw") or {}).get("space")
        if space and space != wl.space:
            raise ServiceError(f"chroma at {self.label}: collection {wl.collection!r} uses space "
                               f"{space!r}, the workload says index.space {wl.space!r} (the exact "
                               "top-k would be computed with another metric)")
        st, count = await self._call("GET", f"{self._coll_url()}/count", what="count")
        if st != 200 or count != wl.vectors:
            raise ServiceError(f"chroma at {self.label}: collection {wl.collection!r} holds "
                               f"{count} vectors, the workload says vectors: {wl.vectors} (recall "
                               "needs exactly the seeded data: recreate it with create: true)")
        await self._spot_check()

    async def _spot_check(self) -> None:
        """The stored vectors are the seeded ones (first, middle, last rows)."""
        wl = self.wl
        rows = sorted({0, wl.vectors // 2, wl.vectors - 1})
        st, got = await self._call("POST", f"{self._coll_url()}/get",
                                   {"ids": [str(i) for i in rows], "include": ["embeddings"]},
                                   what="get")
        if st != 200 or not isinstance(got, dict):
            raise ServiceError(f"chroma at {self.label}: reading back vectors failed with HTTP "
                               f"{st}: {self._err(got)}")
        stored = dict(zip(got.get("ids") or [], got.get("embeddings") or []))
        for i in rows:
            want = data_rows(wl, i, i + 1)[0][0]
            have = stored.get(str(i))
            if have is None or len(have) != wl.dimension or not np.allclose(
                    np.asarray(have, dtype=np.float32), want, rtol=1e-6, atol=1e-6):
                raise ServiceError(f"chroma at {self.label}: collection {wl.collection!r} does "
                                   f"not hold this workload's seeded data (vector {i} differs: "
                                   "another seed, dimension or data set); recreate it with "
                                   "create: true")

    def _adopt(self, coll: dict) -> None:
        self._cid = coll["id"]
        _COLLECTION_IDS[(self.db_url, self.wl.collection)] = self._cid
        self._server["collection_id"] = coll["id"]
        self._server["configuration"] = coll.get("configuration_json")
        self._server["dimension"] = coll.get("dimension")

    def _query_encoding(self):
        k, field = self.wl.k, self.wl.filter_field

        def encode(q, category: int | None) -> bytes:
            where = "" if category is None else f',"where":{{"{field}":{{"$eq":{category}}}}}'
            return (f'{{"query_embeddings":[{f32_json(q)}],"n_results":{k},'
                    f'"include":["distances"]{where}}}').encode()
        return "chroma", encode

    async def prepare(self) -> None:
        wl = self.wl
        if not wl.create:
            return
        await self._load(lambda start, stop: data_rows(wl, start, stop), wl.vectors)
        # One query before the load makes the server index what was just added (Chroma applies
        # its write log lazily); its time is not measured.
        self._ensure_dataset()
        await self._first_query(self._bodies[0])

    async def load_vectors(self, x: np.ndarray) -> None:
        """A fresh collection holding exactly the rows of x (ids "0".."n-1"): a pipeline's
        embedded corpus, loaded like the seeded data."""
        await self._load(lambda start, stop: (x[start:stop], None), len(x))
        await self._first_query(self.query_body(x[0]))

    async def _load(self, rows, n: int) -> None:
        """(Re)create the collection and add n vectors, rows(start, stop) -> (x, categories)."""
        wl = self.wl
        t0 = now_ns()
        st, body = await self._call("DELETE", f"{self.db_url}/collections/{wl.collection}",
                                    what="DELETE stale collection")
        if st not in (200, 204, 404):
            raise ServiceError(f"chroma at {self.label}: deleting the stale collection "
                               f"{wl.collection!r} failed with HTTP {st}: {self._err(body)}")
        hnsw = {"space": wl.space}
        for ours, theirs in (("ef_search", "ef_search"), ("construction_ef", "ef_construction"),
                             ("M", "max_neighbors")):
            if wl.index.get(ours) is not None:
                hnsw[theirs] = int(wl.index[ours])
        st, coll = await self._call("POST", f"{self.db_url}/collections",
                                    {"name": wl.collection, "configuration": {"hnsw": hnsw},
                                     "metadata": {"created_by": "aifb", "aifb_seed": wl.seed,
                                                  "aifb_vectors": n}},
                                    what="create collection")
        if st not in (200, 201) or not isinstance(coll, dict):
            raise ServiceError(f"chroma at {self.label}: creating collection {wl.collection!r} "
                               f"failed with HTTP {st}: {self._err(coll)}")
        self._adopt(coll)
        batch = wl.batch_size
        if self._server.get("max_batch_size"):
            batch = min(batch, int(self._server["max_batch_size"]))
        url = f"{self._coll_url()}/add"
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            x, cats = rows(start, stop)
            payload = {"ids": [str(i) for i in range(start, stop)],
                       "embeddings": self._encode_embeddings(x)}
            if cats is not None:
                payload["metadatas"] = [{wl.filter_field: int(c)} for c in cats]
            st, body = await self._call("POST", url, payload, timeout=PREPARE_TIMEOUT_S,
                                        what="add")
            if st not in (200, 201):
                msg = self._err(body)
                if "dimension" in msg.lower():
                    raise ServiceError(f"chroma at {self.label} rejected the vectors: dimension "
                                       f"mismatch (workload dimension {wl.dimension}): {msg}")
                raise ServiceError(f"chroma at {self.label}: adding vectors {start}..{stop - 1} "
                                   f"failed with HTTP {st}: {msg}")
        st, count = await self._call("GET", f"{self._coll_url()}/count", what="count")
        if st != 200 or count != n:
            raise ServiceError(f"chroma at {self.label}: collection {wl.collection!r} holds "
                               f"{count} vectors after loading {n}")
        self._server["load_s"] = round((now_ns() - t0) / 1e9, 6)

    async def _first_query(self, body: bytes) -> None:
        st, body = await self._call("POST", f"{self._coll_url()}/query", body,
                                    timeout=PREPARE_TIMEOUT_S, what="first query")
        if st != 200:
            raise ServiceError(f"chroma at {self.label}: the first query failed with HTTP {st}: "
                               f"{self._err(body)}")
        coll = await self._get_collection()
        if coll is not None:
            self._adopt(coll)

    def _encode_embeddings(self, x: np.ndarray) -> list:
        if self._server.get("base64"):
            le = x.astype("<f4", copy=False)
            return [base64.b64encode(row.tobytes()).decode("ascii") for row in le]
        return x.tolist()


    def describe(self) -> dict:
        hnsw = ((self._server.get("configuration") or {}).get("hnsw") or {})
        return {
            **super().describe(),
            "tenant": self.tenant,
            "database": self.database,
            "server_api_version": self._server.get("api_version"),
            "server_max_batch_size": self._server.get("max_batch_size"),
            "collection_id": self._server.get("collection_id"),
            "index_reported": {"space": hnsw.get("space"), "ef_search": hnsw.get("ef_search"),
                               "construction_ef": hnsw.get("ef_construction"),
                               "M": hnsw.get("max_neighbors"),
                               "raw": self._server.get("configuration")},
            "dimension_reported": self._server.get("dimension"),
            "auth": "token" if self.secret else None,
        }

    # -- per request --------------------------------------------------------------------------
    def build(self, worker: int) -> tuple:
        if self._cid is None:  # the insert URL names the collection: look it up first (once)
            return ("find",)
        return super().build(worker)

    async def request(self, worker: int, req: tuple):
        if req[0] == "find":
            await self._find_collection()
            req = super().build(worker)
        return await super().request(worker, req)

    async def ensure_collection(self) -> None:
        """Look up the collection's id unless known (build() returns ("find",) until then)."""
        if self._cid is None:
            await self._find_collection()

    async def _find_collection(self) -> None:
        cid = _COLLECTION_IDS.get((self.db_url, self.wl.collection))
        if cid is None:  # another process prepared it: look it up once, by name
            coll = await self._get_collection()
            if coll is None:
                raise RequestError("NotFoundError",
                                   f"collection {self.wl.collection!r} does not exist")
            cid = coll["id"]
        self._cid = cid


_COLLECTION_IDS: dict[tuple, str] = {}
