"""ChromaDB: top-k vector search and inserts over Chroma's HTTP API v2, spoken directly with aiohttp.

Why not chromadb's own HttpClient: it is synchronous (httpx) or wraps every call in pydantic
models and telemetry spans; a load generator wants a keep-alive pool sized to the concurrency
and nothing on the request path but one POST of pre-encoded bytes. Each logical client owns one
aiohttp session whose pool holds `concurrency` connections; a query is a POST of a JSON body
encoded once before the load (the seeded query set), t_end is taken when the whole response body
has been read, and the reply is parsed (and recall computed) after that.

API v2 paths used (checked against chromadb 1.5's server, GET /openapi.json):

    GET    /api/v2/heartbeat                                        readiness / reachability
    GET    /api/v2/version, /api/v2/pre-flight-checks               server version, max batch size
    GET    /api/v2/tenants/{t}/databases/{db}                       the database exists
    GET    /api/v2/tenants/{t}/databases/{db}/collections/{name}    collection by name (id, config, dimension)
    POST   /api/v2/tenants/{t}/databases/{db}/collections           create (with hnsw configuration)
    DELETE /api/v2/tenants/{t}/databases/{db}/collections/{name}    drop a stale collection
    POST   .../collections/{id}/add | /query | /get, GET .../count

Endpoints: http(s)://host:port. A token (service.api_key_env / api_key_file, or password_env)
is sent as `x-chroma-token` and `Authorization: Bearer`, never shown.

The workload (workflow/schemas/workloads/chroma.schema.yaml) is shared with the Qdrant client:
a seeded data set of `vectors` x `dimension` float32 vectors (i.i.d. standard normal, generated
in fixed blocks so any part can be regenerated), a seeded query set of `queries` vectors, an
optional categorical metadata field used as a filter, and the EXACT top-k of every query,
computed by brute force (numpy, float64) on the same data with the same metric and filter. Each
query record carries `recall` = |returned top-k ∩ exact top-k| / k (k = min(k, vectors that
match the filter)). That machinery lives here (the first vector client); aifb.clients.qdrant
imports it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import threading
import uuid
from urllib.parse import urlsplit

import numpy as np

from ..clock import now_ns
from ..errors import ServiceError
from . import register
from .base import CoroutineClient, RequestError

# =========================================================================== shared: workload

SPACES = ("cosine", "l2", "ip")
BLOCK = 4096                 # data rows per generation block (fixed: part of the data's definition)
DEFAULT_DATA_SEED = 42
COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
VECTOR_DEFAULTS = {
    "collection": "aifb_bench",
    "create": True,
    "vectors": 10000,
    "dimension": 128,
    "k": 10,
    "queries": 1000,
    "ops": {"query": 1.0},
    "index": {},
    "filter": None,
    "batch_size": 1000,
    "insert_batch": 1,
    "seed": DEFAULT_DATA_SEED,
}
INDEX_KEYS = ("space", "ef_search", "construction_ef", "M")
INSERTED_PREFIX = "ins-"     # ids of vectors inserted during the load (chroma); qdrant uses UUIDs


class VectorWorkload:
    """The parsed `workload:` of a vector-search recipe (chroma and qdrant share it)."""

    def __init__(self, workload: dict | None, kind: str, extra_index_keys: tuple = (),
                 extra_keys: tuple = ()):
        wl = {**VECTOR_DEFAULTS, **(workload or {})}
        self.kind = kind
        where = f"{kind} workload"
        known = set(VECTOR_DEFAULTS) | set(extra_keys)
        unknown = sorted(set(wl) - known)
        if unknown:
            raise ServiceError(f"{where}: unknown field(s) {unknown} (known: {sorted(known)})")

        def pos_int(name, value, minimum=1):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ServiceError(f"{where}.{name}: {value!r} is not an integer >= {minimum}")
            return value

        self.collection = str(wl["collection"])
        if not COLLECTION_NAME.match(self.collection):
            raise ServiceError(f"{where}.collection: {self.collection!r} is not a valid name "
                               "(3-512 characters from [a-zA-Z0-9._-], starting and ending with "
                               "a letter or digit)")
        self.create = bool(wl["create"])
        self.vectors = pos_int("vectors", wl["vectors"])
        self.dimension = pos_int("dimension", wl["dimension"])
        self.k = pos_int("k", wl["k"])
        self.queries = pos_int("queries", wl["queries"])
        self.batch_size = pos_int("batch_size", wl["batch_size"])
        self.insert_batch = pos_int("insert_batch", wl["insert_batch"])
        self.seed = pos_int("seed", wl["seed"], 0)
        ops = wl["ops"] or {}
        if not isinstance(ops, dict) or set(ops) - {"query", "insert"}:
            bad = sorted(set(ops) - {"query", "insert"}) if isinstance(ops, dict) else ops
            raise ServiceError(f"{where}.ops: unsupported operation(s) {bad} (supported: query, "
                               "insert)")
        try:
            weights = {k: float(v) for k, v in ops.items() if float(v) > 0}
        except (TypeError, ValueError):
            raise ServiceError(f"{where}.ops: weights must be numbers, got {ops!r}") from None
        total = sum(weights.values())
        if total <= 0:
            raise ServiceError(f"{where}.ops: the weights sum to zero")
        self.ops = {k: v / total for k, v in sorted(weights.items(), reverse=True)}
        self.p_query = self.ops.get("query", 0.0)
        index = dict(wl["index"] or {})
        unknown = sorted(set(index) - set(INDEX_KEYS) - set(extra_index_keys))
        if unknown:
            raise ServiceError(f"{where}.index: unknown field(s) {unknown} (known: "
                               f"{sorted(INDEX_KEYS + tuple(extra_index_keys))})")
        self.space = index.get("space", "cosine")
        if self.space not in SPACES:
            raise ServiceError(f"{where}.index.space: {self.space!r} is not one of {list(SPACES)}")
        for key in ("ef_search", "construction_ef", "M"):
            if index.get(key) is not None:
                pos_int(f"index.{key}", index[key])
        self.index = index
        flt = wl["filter"]
        self.filter_field = None
        self.filter_values = None
        if flt:
            if not isinstance(flt, dict) or set(flt) - {"field", "values"}:
                raise ServiceError(f"{where}.filter: expected {{field: NAME, values: N}}, got {flt!r}")
            self.filter_field = str(flt.get("field", "category"))
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", self.filter_field):
                raise ServiceError(f"{where}.filter.field: {self.filter_field!r} is not a plain "
                                   "field name ([A-Za-z_][A-Za-z0-9_]*)")
            self.filter_values = pos_int("filter.values", flt.get("values", 4), 2)
        self.raw = {k: wl[k] for k in sorted(wl)}
        self.extra = {k: wl[k] for k in extra_keys if k in wl}

    def key(self) -> tuple:
        """What the data set and its exact top-k depend on (and nothing else)."""
        return (self.vectors, self.dimension, self.k, self.queries, self.seed, self.space,
                self.filter_values)

    def describe(self) -> dict:
        return {
            "collection": self.collection, "create": self.create, "vectors": self.vectors,
            "dimension": self.dimension, "k": self.k, "queries": self.queries, "ops": self.ops,
            "space": self.space, "index_requested": {k: v for k, v in self.index.items()},
            "filter": ({"field": self.filter_field, "values": self.filter_values}
                       if self.filter_field else None),
            "batch_size": self.batch_size, "insert_batch": self.insert_batch, "seed": self.seed,
            "data": ("float32 vectors, i.i.d. standard normal, seeded (numpy PCG64 per "
                     f"{BLOCK}-row block); query set drawn the same way, independently"),
        }


# =========================================================================== shared: data

def data_rows(wl: VectorWorkload, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows [start, stop) of the data set: float32 vectors and (with a filter) categories.
    Row i is the same whichever range asks for it (generated per fixed block)."""
    vecs, cats = [], []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        lo = b * BLOCK
        n = min(BLOCK, wl.vectors - lo)
        x = np.random.default_rng([wl.seed, 0xDA7A, b]).standard_normal((n, wl.dimension),
                                                                         dtype=np.float32)
        a, z = max(start, lo) - lo, min(stop, lo + n) - lo
        vecs.append(x[a:z])
        if wl.filter_values:
            c = np.random.default_rng([wl.seed, 0xCA7, b]).integers(0, wl.filter_values, n)
            cats.append(c[a:z])
    x = np.concatenate(vecs) if len(vecs) > 1 else vecs[0]
    return x, (np.concatenate(cats) if wl.filter_values else None)


def query_set(wl: VectorWorkload) -> tuple[np.ndarray, np.ndarray | None]:
    q = np.random.default_rng([wl.seed, 0x9E41]).standard_normal((wl.queries, wl.dimension),
                                                                 dtype=np.float32)
    f = (np.random.default_rng([wl.seed, 0xF117]).integers(0, wl.filter_values, wl.queries)
         if wl.filter_values else None)
    return q, f


def canonical_distances(space: str, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Distances (smaller = nearer) in the canonical form the recall check compares:
    l2 -> squared Euclidean; cosine -> 1 - cos; ip -> -dot. float64."""
    q = q.astype(np.float64, copy=False)
    x = x.astype(np.float64, copy=False)
    if space == "l2":
        d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
        return np.maximum(d, 0.0)
    if space == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1), 1e-30)[:, None]
        xn = x / np.maximum(np.linalg.norm(x, axis=1), 1e-30)[:, None]
        return 1.0 - qn @ xn.T
    return -(q @ x.T)


class GroundTruth:
    """Exact top-k of every query: ids (Q x k, -1 padded), n_valid (Q,), kth (Q,) canonical."""

    def __init__(self, ids: np.ndarray, dist: np.ndarray):
        self.ids = ids
        self.dist = dist
        self.n_valid = np.isfinite(dist).sum(axis=1)
        rows = np.arange(len(ids))
        self.kth = np.where(self.n_valid > 0, dist[rows, np.maximum(self.n_valid - 1, 0)], np.nan)


def exact_topk(wl: VectorWorkload, queries: np.ndarray, filters: np.ndarray | None,
               query_chunk: int = 1024) -> GroundTruth:
    """Brute force over the data set, block by block (memory: one block plus Q x k)."""
    nq, k = len(queries), wl.k
    best_d = np.full((nq, k), np.inf)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    for start in range(0, wl.vectors, BLOCK):
        stop = min(start + BLOCK, wl.vectors)
        x, cats = data_rows(wl, start, stop)
        ids = np.arange(start, stop, dtype=np.int64)
        for qs in range(0, nq, query_chunk):
            qe = min(qs + query_chunk, nq)
            d = canonical_distances(wl.space, queries[qs:qe], x)
            if filters is not None:
                d[cats[None, :] != filters[qs:qe, None]] = np.inf
            cand_d = np.concatenate([best_d[qs:qe], d], axis=1)
            cand_i = np.concatenate([best_i[qs:qe], np.broadcast_to(ids, d.shape)], axis=1)
            sel = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
            best_d[qs:qe] = np.take_along_axis(cand_d, sel, axis=1)
            best_i[qs:qe] = np.take_along_axis(cand_i, sel, axis=1)
    order = np.lexsort((best_i, best_d), axis=1)
    best_d = np.take_along_axis(best_d, order, axis=1)
    best_i = np.take_along_axis(best_i, order, axis=1)
    best_i[~np.isfinite(best_d)] = -1
    return GroundTruth(best_i, best_d)


class Dataset:
    """The query set and its exact top-k (computed once per process and workload key)."""

    def __init__(self, wl: VectorWorkload):
        self.queries, self.filters = query_set(wl)
        t0 = now_ns()
        self.truth = exact_topk(wl, self.queries, self.filters)
        self.truth_s = (now_ns() - t0) / 1e9
        self.encoded: dict = {}        # per-client-kind caches (pre-encoded bodies, id sets)


_DATASETS: dict[tuple, Dataset] = {}
_DATASETS_LOCK = threading.Lock()


def dataset_for(wl: VectorWorkload) -> Dataset:
    with _DATASETS_LOCK:
        ds = _DATASETS.get(wl.key())
        if ds is None:
            ds = _DATASETS[wl.key()] = Dataset(wl)
        return ds


def f32_json(v: np.ndarray) -> str:
    """A float32 vector as a JSON array of the shortest decimals that round-trip to float32."""
    return "[" + ",".join([str(x) for x in v.astype(np.float32, copy=False)]) + "]"


TOLERANCE_REL, TOLERANCE_ABS = 1e-4, 1e-6


class RecallScorer:
    """recall of one query reply against the exact top-k.

    `ids` are the returned ids, `dists` the canonical distances of the same items (or None);
    `is_inserted(id)` tells vectors inserted during the load. A returned base vector counts when
    it is in the exact top-k of the preloaded data; a returned inserted vector counts when its
    distance is within the exact k-th distance (then it belongs to the true top-k of the current
    data). Denominator: min(k, base vectors matching the filter)."""

    def __init__(self, truth: GroundTruth, id_key):
        self.sets = [frozenset(id_key(int(i)) for i in row if i >= 0) for row in truth.ids]
        self.n_valid = truth.n_valid.tolist()
        self.kth = [(float(v) if np.isfinite(v) else None) for v in truth.kth]

    def score(self, qi: int, ids, dists, is_inserted) -> tuple[float | None, int]:
        """(recall or None when no vector matches the filter, returned inserted vectors)."""
        denom = self.n_valid[qi]
        truth = self.sets[qi]
        hits = 0
        inserted = 0
        kth = self.kth[qi]
        for j, i in enumerate(ids):
            if i in truth:
                hits += 1
            elif is_inserted(i):
                inserted += 1
                if dists is not None and kth is not None:
                    d = dists[j]
                    if d is not None and d <= kth + abs(kth) * TOLERANCE_REL + TOLERANCE_ABS:
                        hits += 1
        if denom == 0:
            return None, inserted
        return min(hits, denom) / denom, inserted


def record_fields(qi: int, recall: float | None, inserted: int) -> dict:
    """The service-specific fields of a query record: query_id (index into the seeded query
    set), recall, and returned_inserted (how many returned vectors were inserted during the
    load; only when any)."""
    out = {"query_id": qi}
    if recall is not None:
        out["recall"] = recall
    if inserted:
        out["returned_inserted"] = inserted
    return out


# =========================================================================== shared: HTTP

def parse_http_endpoint(endpoint: str, kind: str, default_port: int) -> tuple[str, str]:
    """(base URL without a trailing slash, host:port label); ServiceError when malformed."""
    text = endpoint if "://" in endpoint else f"http://{endpoint}"
    try:
        parts = urlsplit(text)
        port = parts.port or default_port
    except ValueError:
        raise ServiceError(f"{kind} endpoint {endpoint!r} is not http://host:port") from None
    if parts.scheme not in ("http", "https"):
        raise ServiceError(f"{kind} endpoint scheme {parts.scheme!r} is not supported (use "
                           "http://host:port or https://host:port)")
    if not parts.hostname:
        raise ServiceError(f"{kind} endpoint {endpoint!r} names no host")
    if parts.username or parts.password:
        raise ServiceError(f"{kind} endpoint: credentials in the URL are not supported; give the "
                           "key through service.api_key_env or service.api_key_file")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"
    return base, f"{parts.hostname}:{port}"


def secret_from(secrets: dict | None) -> str | None:
    secrets = secrets or {}
    return secrets.get("api_key") or secrets.get("token") or secrets.get("password") or None


def new_session(connections: int, headers: dict | None = None):
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                     ttl_dns_cache=None, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, headers=headers or {},
                                 timeout=aiohttp.ClientTimeout(total=None),
                                 auto_decompress=False, skip_auto_headers=("User-Agent",))


def connection_message(kind: str, label: str, exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, asyncio.TimeoutError):
        return f"cannot reach {kind} at {label}: no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror if getattr(exc, "os_error", None) and exc.os_error.strerror else "connection failed"
        return f"cannot reach {kind} at {label}: {why}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{kind} at {label} closed the connection"
    return f"cannot talk to {kind} at {label}: {type(exc).__name__}"


class Scrubber:
    def __init__(self, secret: str | None):
        self.secret = secret

    def __call__(self, text) -> str:
        text = str(text)
        if self.secret and self.secret in text:
            text = text.replace(self.secret, "***")
        return text


# =========================================================================== chroma client

DEFAULT_PORT = 8000
ADMIN_TIMEOUT_S = 30.0
PREPARE_TIMEOUT_S = 300.0
CHROMA_EXTRA_KEYS = ("tenant", "database")


def _chroma_canonical(space: str):
    # Chroma reports l2 as squared L2, cosine as 1 - cos, ip as 1 - dot.
    if space == "ip":
        return lambda d: None if d is None else d - 1.0
    return lambda d: d


@register("chroma")
class ChromaClient(CoroutineClient):
    kind = "chroma"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self.base, self.label = parse_http_endpoint(endpoint, "chroma", DEFAULT_PORT)
        self.wl = VectorWorkload(workload, "chroma", extra_keys=CHROMA_EXTRA_KEYS)
        self.tenant = str(self.wl.extra.get("tenant", "default_tenant"))
        self.database = str(self.wl.extra.get("database", "default_database"))
        self.db_url = f"{self.base}/api/v2/tenants/{self.tenant}/databases/{self.database}"
        token = secret_from(secrets)
        self._scrub = Scrubber(token)
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers.update({"x-chroma-token": token, "authorization": f"Bearer {token}"})
        self._session = None
        self._rnds: list = []
        self._inflight: list = []
        self._cid: str | None = None
        self._server: dict = {}
        self._to_canon = _chroma_canonical(self.wl.space)
        self._nonce = uuid.uuid4().hex[:12]
        self._ins_n: list = []
        self._ins_rngs: list = []
        self.ds: Dataset | None = None

    # -- HTTP helpers ---------------------------------------------------------------------
    async def _call(self, method: str, url: str, body=None, timeout: float = ADMIN_TIMEOUT_S,
                    what: str = "request"):
        """One admin request: (status, parsed JSON or None). ServiceError when unreachable."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(method, url, data=data) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                raise ServiceError(f"chroma at {self.label}: no answer to {what} within "
                                   f"{timeout:g} s") from None
            raise ServiceError(connection_message("chroma", self.label, exc)) from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if status in (401, 403):
            raise ServiceError(f"chroma at {self.label} rejected the credentials ({status}) on "
                               f"{what}: set service.api_key_env (or api_key_file) to a valid token")
        return status, parsed

    def _err(self, parsed) -> str:
        if isinstance(parsed, dict):
            return self._scrub(f"{parsed.get('error', 'Error')}: {parsed.get('message', '')}")[:300]
        return "no error message"

    def _coll_url(self) -> str:
        return f"{self.db_url}/collections/{self._cid}"

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        self._session = new_session(connections, self._headers)
        self._rnds = [random.Random(f"aifb-vector:{self.seed}:{w}").random
                      for w in range(connections)]
        self._inflight = ["query"] * connections
        self._ins_n = [0] * connections
        self._ins_rngs = [np.random.default_rng([self.seed & 0xFFFFFFFF, 0x1A5, w])
                          for w in range(connections)]

    async def validate(self) -> None:
        await self.probe(self.base, ADMIN_TIMEOUT_S, session=self._session)
        st, v = await self._call("GET", f"{self.base}/api/v2/version", what="GET version")
        self._server["api_version"] = v if st == 200 else None
        st, pf = await self._call("GET", f"{self.base}/api/v2/pre-flight-checks",
                                  what="pre-flight checks")
        self._server["max_batch_size"] = (pf or {}).get("max_batch_size") if st == 200 else None
        self._server["base64"] = bool((pf or {}).get("supports_base64_encoding")) if st == 200 else False
        st, body = await self._call("GET", self.db_url, what="GET database")
        if st == 404:
            raise ServiceError(f"chroma at {self.label}: database {self.database!r} of tenant "
                               f"{self.tenant!r} does not exist ({self._err(body)})")
        if st != 200:
            raise ServiceError(f"chroma at {self.label}: GET database failed with HTTP {st}: "
                               f"{self._err(body)}")
        if not self.wl.create:
            await self._check_existing()
        self._ensure_dataset()

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

    def _ensure_dataset(self) -> None:
        if self.ds is not None:
            return
        self.ds = dataset_for(self.wl)
        cache = self.ds.encoded.get("chroma")
        if cache is None:
            bodies = []
            for qi, q in enumerate(self.ds.queries):
                where = ""
                if self.ds.filters is not None:
                    where = (f',"where":{{"{self.wl.filter_field}":{{"$eq":'
                             f'{int(self.ds.filters[qi])}}}}}')
                bodies.append((f'{{"query_embeddings":[{f32_json(q)}],"n_results":{self.wl.k},'
                               f'"include":["distances"]{where}}}').encode())
            cache = self.ds.encoded["chroma"] = (bodies, RecallScorer(self.ds.truth, str))
        self._bodies, self._scorer = cache

    async def prepare(self) -> None:
        wl = self.wl
        if not wl.create:
            return
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
                                                  "aifb_vectors": wl.vectors}},
                                    what="create collection")
        if st not in (200, 201) or not isinstance(coll, dict):
            raise ServiceError(f"chroma at {self.label}: creating collection {wl.collection!r} "
                               f"failed with HTTP {st}: {self._err(coll)}")
        self._adopt(coll)
        batch = wl.batch_size
        if self._server.get("max_batch_size"):
            batch = min(batch, int(self._server["max_batch_size"]))
        url = f"{self._coll_url()}/add"
        for start in range(0, wl.vectors, batch):
            stop = min(start + batch, wl.vectors)
            x, cats = data_rows(wl, start, stop)
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
        if st != 200 or count != wl.vectors:
            raise ServiceError(f"chroma at {self.label}: collection {wl.collection!r} holds "
                               f"{count} vectors after loading {wl.vectors}")
        self._server["load_s"] = round((now_ns() - t0) / 1e9, 6)
        # One query before the load makes the server index what was just added (Chroma applies
        # its write log lazily); its time is not measured.
        self._ensure_dataset()
        st, body = await self._call("POST", f"{self._coll_url()}/query", self._bodies[0],
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
        """A real heartbeat request: GET /api/v2/heartbeat answers {"nanosecond heartbeat": N}."""
        base, label = parse_http_endpoint(endpoint, "chroma", DEFAULT_PORT)
        own = session is None
        if own:
            session = new_session(1)
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    async with session.get(f"{base}/api/v2/heartbeat") as resp:
                        raw = await resp.read()
                        status = resp.status
            except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    raise ServiceError(f"chroma at {label} did not answer a heartbeat within "
                                       f"{timeout_s:g} s") from None
                raise ServiceError(connection_message("chroma", label, exc)) from None
            try:
                beat = json.loads(raw)
            except ValueError:
                beat = None
            if status != 200 or not isinstance(beat, dict) or "nanosecond heartbeat" not in beat:
                raise ServiceError(f"{label} answered GET /api/v2/heartbeat with HTTP {status} "
                                   f"{raw[:80]!r}: not a Chroma (API v2) server")
        finally:
            if own:
                await session.close()

    def describe(self) -> dict:
        hnsw = ((self._server.get("configuration") or {}).get("hnsw") or {})
        return {
            "kind": "chroma",
            "protocol": "Chroma HTTP API v2 (JSON over HTTP/1.1)",
            "implementation": ("aifb aiohttp client (no chromadb client): keep-alive pool of "
                               "`concurrency` connections per client, pre-encoded query bodies, "
                               "t_end when the response body is read, parsing after"),
            "endpoint": self.base,
            "tenant": self.tenant,
            "database": self.database,
            "server_api_version": self._server.get("api_version"),
            "server_max_batch_size": self._server.get("max_batch_size"),
            "collection_id": self._server.get("collection_id"),
            **self.wl.describe(),
            "index_reported": {"space": hnsw.get("space"), "ef_search": hnsw.get("ef_search"),
                               "construction_ef": hnsw.get("ef_construction"),
                               "M": hnsw.get("max_neighbors"),
                               "raw": self._server.get("configuration")},
            "dimension_reported": self._server.get("dimension"),
            "load_s": self._server.get("load_s"),
            "ground_truth": {"method": "brute force, numpy float64, same data, metric and filter",
                             "seconds": round(self.ds.truth_s, 6) if self.ds else None},
            "recall": ("|returned top-k ∩ exact top-k| / min(k, matching vectors) per query; a "
                       "vector inserted during the load counts when its distance is within the "
                       "exact k-th distance"),
            "bytes": "HTTP request / response body sizes",
            "auth": "token" if self._scrub.secret else None,
        }

    # -- per request --------------------------------------------------------------------------
    def _op_name(self, worker: int) -> str:
        return self._inflight[worker] if worker < len(self._inflight) else "query"

    async def request(self, worker: int):
        if self._cid is None:
            await self._find_collection()
        if self.wl.p_query >= 1.0 or self._rnds[worker]() < self.wl.p_query:
            return await self._query(worker)
        return await self._insert(worker)

    async def _find_collection(self) -> None:
        cid = _COLLECTION_IDS.get((self.db_url, self.wl.collection))
        if cid is None:  # another process prepared it: look it up once, by name
            coll = await self._get_collection()
            if coll is None:
                raise RequestError("NotFoundError",
                                   f"collection {self.wl.collection!r} does not exist")
            cid = coll["id"]
        self._cid = cid

    async def _query(self, worker: int):
        self._inflight[worker] = "query"
        qi = int(self._rnds[worker]() * len(self._bodies))
        body = self._bodies[qi]
        try:
            async with self._session.post(f"{self._coll_url()}/query", data=body) as resp:
                raw = await resp.read()
                t_end = now_ns()
                status = resp.status
        except _aiohttp_error() as exc:
            raise RequestError(_etype(exc), connection_message("chroma", self.label, exc)) from None
        if status != 200:
            return self._http_error("query", status, raw, len(body), t_end)
        try:
            reply = json.loads(raw)
            ids = reply["ids"][0]
            dists = reply.get("distances")
            dists = [self._to_canon(d) for d in dists[0]] if dists else None
        except (ValueError, KeyError, IndexError, TypeError):
            return ("query", False, "ProtocolError", "unexpected query reply from chroma",
                    len(body), len(raw), None, t_end)
        recall, inserted = self._scorer.score(qi, ids, dists, _is_inserted_chroma)
        return ("query", True, None, None, len(body), len(raw), None, t_end,
                record_fields(qi, recall, inserted))

    async def _insert(self, worker: int):
        self._inflight[worker] = "insert"
        wl = self.wl
        rng = self._ins_rngs[worker]
        n0 = self._ins_n[worker]
        self._ins_n[worker] = n0 + wl.insert_batch
        x = rng.standard_normal((wl.insert_batch, wl.dimension), dtype=np.float32)
        payload = {"ids": [f"{INSERTED_PREFIX}{self._nonce}-{worker}-{n0 + j}"
                           for j in range(wl.insert_batch)],
                   "embeddings": self._encode_embeddings(x)}
        if wl.filter_values:
            payload["metadatas"] = [{wl.filter_field: int(c)}
                                    for c in rng.integers(0, wl.filter_values, wl.insert_batch)]
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            async with self._session.post(f"{self._coll_url()}/add", data=body) as resp:
                raw = await resp.read()
                t_end = now_ns()
                status = resp.status
        except _aiohttp_error() as exc:
            raise RequestError(_etype(exc), connection_message("chroma", self.label, exc)) from None
        if status not in (200, 201):
            return self._http_error("insert", status, raw, len(body), t_end)
        return ("insert", True, None, None, len(body), len(raw), None, t_end)

    def _http_error(self, op: str, status: int, raw: bytes, bytes_out: int, t_end: int):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        etype = (parsed.get("error") if isinstance(parsed, dict) and parsed.get("error")
                 else f"HTTP{status}")
        msg = f"HTTP {status}: {self._err(parsed) if parsed else raw[:120]!r}"
        return (op, False, str(etype)[:60], self._scrub(msg)[:200], bytes_out, len(raw), None,
                t_end)


_COLLECTION_IDS: dict[tuple, str] = {}


def _is_inserted_chroma(i) -> bool:
    return isinstance(i, str) and i.startswith(INSERTED_PREFIX)


def _aiohttp_error():
    import aiohttp
    return aiohttp.ClientError


def _etype(exc: BaseException) -> str:
    import aiohttp
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                        aiohttp.ClientOSError)):
        return "ConnectionError"
    return type(exc).__name__
