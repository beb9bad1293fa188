"""What the HTTP vector-search clients (aifb.clients.vector.chroma, aifb.clients.vector.qdrant) share.

The workload (workflow/schemas/workloads/vector.schema.yaml, which each kind's extends): a seeded
data set of `vectors` x `dimension` float32 vectors (i.i.d. standard normal, generated in fixed
blocks so any part can be regenerated), a seeded query set of `queries` vectors, an optional
categorical metadata field used as a filter, and the EXACT top-k of every query, computed by
brute force (numpy, float64) on the same data with the same metric and filter. Each query record
carries `recall` = |returned top-k ∩ exact top-k| / k (k = min(k, vectors that match the filter)).

`VectorHttpClient` is the request path both clients run under load, spoken directly with
aiohttp: one keep-alive session per logical client whose pool holds `concurrency` connections,
a query is one request with a body encoded once before the load (the seeded query set), t_end is
taken when the whole response body has been read, and the reply is parsed (and recall computed)
after that. A subclass says what differs: URLs, auth headers, how a reply lists ids and scores,
how an insert is encoded, and its error vocabulary.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading

import numpy as np
import orjson

from aifb import endpoints
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.clients.base import CoroutineClient, OpMix, RequestError

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
        mix = OpMix(wl["ops"] or {}, ("query", "insert"), f"{where}.ops")
        self.ops = mix.weights
        self.p_query = mix.share("query")
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


def reply_json(raw: bytes):
    """A query reply, parsed once per request: orjson (2.3 µs for a 10-point Qdrant reply where
    json.loads takes 10.8), json for what only Python's json reads (NaN, Infinity). A
    ValueError when it is not JSON, as json.loads."""
    try:
        return orjson.loads(raw)
    except ValueError:
        return json.loads(raw)


TOLERANCE_REL, TOLERANCE_ABS = 1e-4, 1e-6
# A returned base vector outside the exact top-k counts only when it ties with the k-th distance
# to within float32 precision of the server's distance (a few ulps over the dimensions): a
# looser bound would count the (k+1)-th neighbour whenever it happens to lie close.
TIE_REL, TIE_ABS = 1e-6, 1e-9


class RecallScorer:
    """recall of one query reply against the exact top-k.

    `ids` are the returned ids, `dists` the canonical distances of the same items (or None);
    `is_inserted(id)` tells vectors inserted during the load. A returned vector counts when it
    is in the exact top-k of the preloaded data, or when its distance ties with the exact k-th
    distance (as correct an answer as the id the exact search happened to keep; TIE_REL), or -
    an inserted vector - is within it (it then belongs to the true top-k of the current data). Each returned id counts once. Denominator: min(k, base vectors matching the filter)."""

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
        seen = set()
        near = tie = None
        if kth is not None:
            near = kth + abs(kth) * TOLERANCE_REL + TOLERANCE_ABS
            tie = kth + abs(kth) * TIE_REL + TIE_ABS
        for j, i in enumerate(ids):
            if i in seen:
                continue
            seen.add(i)
            new = is_inserted(i)
            if new:
                inserted += 1
            if i in truth:
                hits += 1
            elif dists is not None and near is not None:
                d = dists[j]
                if d is not None and d <= (near if new else tie):
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
    parts = endpoints.split(kind, endpoint)
    port = parts.port or default_port
    if parts.username:
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


# =========================================================================== shared: client

def unreachable(kind: str, label: str, exc: BaseException, timeout_message: str) -> ServiceError:
    """The error for an admin request that got no answer: timeout_message on a timeout, else
    what the connection failure was."""
    if isinstance(exc, asyncio.TimeoutError):
        return ServiceError(timeout_message)
    return ServiceError(connection_message(kind, label, exc))


ADMIN_TIMEOUT_S = 30.0
PREPARE_TIMEOUT_S = 300.0


class VectorHttpClient(CoroutineClient):
    """The request path, lifecycle helpers and describe() of an HTTP vector-search client.

    Subclasses set `kind` (by @register), `default_port`, `probe_path`, `protocol`, `library`
    (the official client this replaces), `insert_ok`, and implement auth_headers, check_probe,
    canonical, _query_url, _parse_query, _is_inserted, _insert_request, _err, _error_type,
    _check_server, _check_existing and _query_encoding, plus prepare."""

    default_port: int
    probe_path: str
    protocol: str
    library: str
    insert_ok: tuple = (200,)
    id_type: type                    # the type of the ids a query reply returns (str or int)

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None, *,
                 extra_index_keys: tuple = (), extra_keys: tuple = ()):
        super().__init__(endpoint, workload, seed, secrets)
        self.base, self.label = parse_http_endpoint(endpoint, self.kind, self.default_port)
        self.wl = VectorWorkload(workload, self.kind, extra_index_keys=extra_index_keys,
                                 extra_keys=extra_keys)
        self.secret = secret_from(secrets)   # the API key (never shown: scrub() removes it)
        self._headers = {"content-type": "application/json", **self.auth_headers(self.secret)}
        self._session = None
        self._rnds: list = []
        self._inflight: list = []
        self._ins_rngs: list = []
        self._server: dict = {}
        self._to_canon = self.canonical(self.wl.space)
        self.ds: Dataset | None = None
        self._bodies: list = []
        self._scorer: RecallScorer | None = None

    # -- what a subclass says ------------------------------------------------------------------
    @staticmethod
    def auth_headers(secret: str | None) -> dict:
        raise NotImplementedError

    @classmethod
    def check_probe(cls, label: str, status: int, raw: bytes) -> None:
        """Raise ServiceError unless (status, body) of GET probe_path is a ready server."""
        raise NotImplementedError

    @staticmethod
    def canonical(space: str):
        """The server's score or distance -> canonical distance (see canonical_distances)."""
        raise NotImplementedError

    async def validate(self) -> None:
        """The server answers and can run this workload: the probe, the server's own checks,
        an existing collection's data (workload.create: false), then the encoded queries."""
        await self.probe(self.base, ADMIN_TIMEOUT_S, session=self._session)
        await self._check_server()
        if not self.wl.create:
            await self._check_existing()
        self._ensure_dataset()

    def _ensure_dataset(self) -> None:
        """The seeded data set and every query's request body, encoded once; kept on the data
        set per encoding, so the clients of one process share them."""
        if self.ds is not None:
            return
        self.ds = dataset_for(self.wl)
        key, encode = self._query_encoding()
        cache = self.ds.encoded.get(key)
        if cache is None:
            filters = self.ds.filters
            bodies = [encode(q, None if filters is None else int(filters[qi]))
                      for qi, q in enumerate(self.ds.queries)]
            cache = self.ds.encoded[key] = (bodies, RecallScorer(self.ds.truth, self.id_type))
        self._bodies, self._scorer = cache

    async def _check_server(self) -> None:
        """The server's version and facts (into self._server); ServiceError when it cannot
        serve the workload."""
        raise NotImplementedError

    async def _check_existing(self) -> None:
        """workload.create: false - the collection must exist and hold exactly this workload's
        data."""
        raise NotImplementedError

    def _query_encoding(self):
        """(cache key, encode(query vector, filter category or None) -> request body)."""
        raise NotImplementedError

    def scrub(self, text) -> str:
        """An error text without the API key."""
        return endpoints.scrub(text, self.secret)

    def _refused(self, status: int, what: str) -> str:
        """The message for HTTP 401/403 on an admin request."""
        raise NotImplementedError

    def _err(self, parsed) -> str:
        """The server's error message from a parsed error body (dict) or its text."""
        raise NotImplementedError

    def _error_type(self, status: int, parsed) -> str:
        raise NotImplementedError

    def _query_url(self) -> str:
        raise NotImplementedError

    def _parse_query(self, raw: bytes) -> tuple[list, list | None]:
        """(returned ids, their canonical distances or None) from a query reply."""
        raise NotImplementedError

    def _is_inserted(self, i) -> bool:
        """Whether a returned id is a vector inserted during the load."""
        raise NotImplementedError

    def _insert_request(self, worker: int, x: np.ndarray, cats) -> tuple[str, str, bytes]:
        """(method, url, body) inserting vectors x (with categories cats, or None)."""
        raise NotImplementedError

    # -- admin requests --------------------------------------------------------------------
    async def _call(self, method: str, url: str, body=None, timeout: float = ADMIN_TIMEOUT_S,
                    what: str = "request"):
        """One admin request: (status, parsed JSON, or the body's text when it is not JSON).
        ServiceError when unreachable or when the credentials are refused."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(method, url, data=data) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
            raise unreachable(self.kind, self.label, exc, f"{self.kind} at {self.label}: no answer "
                              f"to {what} within {timeout:g} s") from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")[:200]
        if status in (401, 403):
            raise ServiceError(self._refused(status, what))
        return status, parsed

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        self._session = new_session(connections, self._headers)
        self._rnds = [random.Random(f"aifb-vector:{self.seed}:{w}").random
                      for w in range(connections)]
        self._inflight = ["query"] * connections
        self._ins_rngs = [np.random.default_rng([self.seed & 0xFFFFFFFF, 0x1A5, w])
                          for w in range(connections)]

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
        """A real readiness request: GET probe_path, judged by check_probe."""
        base, label = parse_http_endpoint(endpoint, cls.kind, cls.default_port)
        own = session is None
        if own:
            session = new_session(1, cls.auth_headers(secret_from(secrets)))
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    async with session.get(f"{base}{cls.probe_path}") as resp:
                        raw = await resp.read()
                        status = resp.status
            except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
                raise unreachable(cls.kind, label, exc, f"{cls.kind} at {label} did not answer "
                                  f"GET {cls.probe_path} within {timeout_s:g} s") from None
            cls.check_probe(label, status, raw)
        finally:
            if own:
                await session.close()

    def describe(self) -> dict:
        """What every vector client reports; a subclass adds its server's facts."""
        return {
            "kind": self.kind,
            "protocol": self.protocol,
            "implementation": (f"aifb aiohttp client (no {self.library}): keep-alive pool of "
                               "`concurrency` connections per client, pre-encoded query bodies, "
                               "t_end when the response body is read, parsing after"),
            "endpoint": self.base,
            **self.wl.describe(),
            "load_s": self._server.get("load_s"),
            "ground_truth": {"method": "brute force, numpy float64, same data, metric and filter",
                             "seconds": round(self.ds.truth_s, 6) if self.ds else None},
            "recall": ("|returned top-k ∩ exact top-k| / min(k, matching vectors) per query; a "
                       "vector inserted during the load counts when its distance is within the "
                       "exact k-th distance"),
            "bytes": "HTTP request / response body sizes",
        }

    # -- per request --------------------------------------------------------------------------
    def _op_name(self, worker: int) -> str:
        return self._inflight[worker] if worker < len(self._inflight) else "query"

    def build(self, worker: int) -> tuple:
        """("query", query index, body) or ("insert", method, url, body): the draw and the
        encoded body, before t_start (query bodies are encoded once, at startup)."""
        if self.wl.p_query >= 1.0 or self._rnds[worker]() < self.wl.p_query:
            self._inflight[worker] = "query"
            qi = int(self._rnds[worker]() * len(self._bodies))
            return "query", qi, self._bodies[qi]
        self._inflight[worker] = "insert"
        wl = self.wl
        rng = self._ins_rngs[worker]
        x = rng.standard_normal((wl.insert_batch, wl.dimension), dtype=np.float32)
        cats = rng.integers(0, wl.filter_values, wl.insert_batch) if wl.filter_values else None
        return ("insert", *self._insert_request(worker, x, cats))

    async def request(self, worker: int, req: tuple):
        if req[0] == "query":
            return await self._query(req[1], req[2])
        return await self._insert(*req[1:])

    async def _send(self, method: str, url: str, body: bytes) -> tuple[int, bytes, int]:
        """(status, body, t_end): t_end once the whole response body is read."""
        try:
            async with self._session.request(method, url, data=body) as resp:
                raw = await resp.read()
                t_end = now_ns()
                status = resp.status
        except _aiohttp_error() as exc:
            raise RequestError(_etype(exc),
                               connection_message(self.kind, self.label, exc)) from None
        return status, raw, t_end

    async def _query(self, qi: int, body: bytes):
        return (await self.search(qi, body))[0]

    def query_body(self, vector) -> bytes:
        """The encoded query for any vector (a pipeline's embedded question)."""
        return self._query_encoding()[1](vector, None)

    async def search(self, qi: int | None, body: bytes) -> tuple[tuple, list]:
        """One query: of the seeded query set (index qi, its encoded body; recall scored), or
        any (qi None: no recall here). (the result tuple, the returned ids; [] on failure). A
        pipeline's retrieve stage uses the ids."""
        status, raw, t_end = await self._send("POST", self._query_url(), body)
        if status != 200:
            return self._http_error("query", status, raw, len(body), t_end), []
        try:
            ids, dists = self._parse_query(raw)
        except (ValueError, KeyError, IndexError, TypeError):
            return ("query", False, "ProtocolError", f"unexpected query reply from {self.kind}",
                    len(body), len(raw), None, t_end), []
        if qi is None:
            return ("query", True, None, None, len(body), len(raw), None, t_end), ids
        recall, inserted = self._scorer.score(qi, ids, dists, self._is_inserted)
        return ("query", True, None, None, len(body), len(raw), None, t_end,
                record_fields(qi, recall, inserted)), ids

    async def _insert(self, method: str, url: str, body: bytes):
        status, raw, t_end = await self._send(method, url, body)
        if status not in self.insert_ok:
            return self._http_error("insert", status, raw, len(body), t_end)
        return ("insert", True, None, None, len(body), len(raw), None, t_end)

    def _http_error(self, op: str, status: int, raw: bytes, bytes_out: int, t_end: int):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")[:120]
        msg = f"HTTP {status}: {self._err(parsed)}"
        return (op, False, self._error_type(status, parsed)[:60], self.scrub(msg)[:200],
                bytes_out, len(raw), None, t_end)


def _aiohttp_error():
    import aiohttp
    return aiohttp.ClientError


def _etype(exc: BaseException) -> str:
    import aiohttp
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                        aiohttp.ClientOSError)):
        return "ConnectionError"
    return type(exc).__name__
