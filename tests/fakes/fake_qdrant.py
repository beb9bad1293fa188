"""FAKE Qdrant server for tests: no Qdrant server can be installed on these machines.

An aiohttp app that follows Qdrant's published REST API (v1.x OpenAPI) for the endpoints
aifb.clients.vector.qdrant uses - and nothing more:

    GET  /  /healthz /livez /readyz              (health endpoints need no API key, as in Qdrant)
    GET  /collections      GET|PUT|DELETE /collections/{name}
    PUT  /collections/{name}/index               payload index (accepted, recorded)
    PUT  /collections/{name}/points              upsert {"points": [{"id", "vector", "payload"}]}
    POST /collections/{name}/points              read points by id
    POST /collections/{name}/points/count
    POST /collections/{name}/points/search       legacy search: {"result": [{"id", "version", "score"}]}
    POST /collections/{name}/points/query        query API:     {"result": {"points": [...]}}
    GET  /metrics  /telemetry                    what the fake served (documented names/fields)

Search is EXACT (numpy brute force over the stored vectors, with `must` / `match.value`
filters), scored like Qdrant: Cosine = dot of the normalised vectors (vectors are normalised on
upsert, as Qdrant does), Euclid = L2 distance, Dot = dot; best first. Deliberate approximation
for recall tests: `skip=m` drops the m best matches of every search, so recall@k is exactly
(k - m) / k whenever at least k + m vectors match. `indexing_polls=n` makes GET collection
report status "yellow" n times after each upsert. `force_dimension=d` (an injected fault)
creates every collection with d dimensions whatever the request says. `api_key` enables key checks (`api-key`
header or `Authorization: Bearer`, 401 otherwise, health endpoints exempt).

Run as a process (what tests use as a stand-in `qdrant` binary):

    python tests/fakes/fake_qdrant.py [--version] [--disable-telemetry] [--skip M]

reading QDRANT__SERVICE__HOST (default 127.0.0.1), QDRANT__SERVICE__HTTP_PORT (6333),
QDRANT__SERVICE__API_KEY and QDRANT__STORAGE__STORAGE_PATH (created, to show it was passed)
like the real server.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from aiohttp import web

FAKE_VERSION = "1.12.4-fake"
HEALTH = {"/healthz": "healthz check passed", "/livez": "healthz check passed",
          "/readyz": "all shards are ready"}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


class Collection:
    def __init__(self, size: int, distance: str, hnsw: dict, optimizers: dict):
        self.size = size
        self.distance = distance
        self.hnsw = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                     "max_indexing_threads": 0, "on_disk": False, **hnsw}
        self.optimizers = {"indexing_threshold": 20000, **optimizers}
        self.points: dict = {}         # id -> (vector float32, payload)
        self.payload_schema: dict = {}
        self._matrix = None
        self.yellow_polls = 0
        self.op_id = 0

    def matrix(self):
        if self._matrix is None:
            ids = list(self.points)
            vecs = (np.stack([self.points[i][0] for i in ids]) if ids
                    else np.zeros((0, self.size), np.float32))
            self._matrix = (ids, vecs)
        return self._matrix

    def info(self) -> dict:
        status = "green"
        if self.yellow_polls > 0:
            self.yellow_polls -= 1
            status = "yellow"
        n = len(self.points)
        return {
            "status": status, "optimizer_status": "ok", "indexed_vectors_count": n,
            "points_count": n, "segments_count": 1,
            "config": {
                "params": {"vectors": {"size": self.size, "distance": self.distance},
                           "shard_number": 1, "replication_factor": 1,
                           "write_consistency_factor": 1, "on_disk_payload": True},
                "hnsw_config": self.hnsw,
                "optimizer_config": self.optimizers,
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                "quantization_config": None,
            },
            "payload_schema": self.payload_schema,
        }


def _ok(result, t0: float, status: int = 200) -> web.Response:
    return web.json_response({"result": result, "status": "ok", "time": time.perf_counter() - t0},
                             status=status)


def _error(message: str, status: int, t0: float) -> web.Response:
    return web.json_response({"status": {"error": message}, "time": time.perf_counter() - t0},
                             status=status)


def _point_id(raw):
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int) and raw >= 0:
        return raw
    if isinstance(raw, str) and UUID_RE.match(raw):
        return str(uuid.UUID(raw))
    return None


def _matches(payload: dict, flt: dict | None) -> bool:
    if not flt:
        return True
    for cond in flt.get("must") or []:
        match = cond.get("match") or {}
        if payload.get(cond.get("key")) != match.get("value"):
            return False
    for cond in flt.get("must_not") or []:
        match = cond.get("match") or {}
        if payload.get(cond.get("key")) == match.get("value"):
            return False
    return True


class FakeQdrant:
    def __init__(self, api_key: str | None = None, skip: int = 0, indexing_polls: int = 0,
                 version: str = FAKE_VERSION, force_dimension: int | None = None):
        self.force_dimension = force_dimension
        self.api_key = api_key
        self.skip = skip
        self.indexing_polls = indexing_polls
        self.version = version
        self.collections: dict[str, Collection] = {}
        self.requests: list[tuple[str, str]] = []     # (method, path) seen, for assertions
        self.searches = 0
        self.responses: dict[tuple[str, str, int], int] = {}   # for /metrics
        self.durations: dict[tuple[str, str, int], float] = {}  # seconds, for /telemetry

    # -- app ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth], client_max_size=256 << 20)
        r = app.router
        r.add_get("/", self.root)
        for path in HEALTH:
            r.add_get(path, self.health)
        r.add_get("/collections", self.list_collections)
        r.add_get("/collections/{name}", self.get_collection)
        r.add_put("/collections/{name}", self.create_collection)
        r.add_delete("/collections/{name}", self.delete_collection)
        r.add_put("/collections/{name}/index", self.create_index)
        r.add_put("/collections/{name}/points", self.upsert)
        r.add_post("/collections/{name}/points", self.retrieve)
        r.add_post("/collections/{name}/points/count", self.count)
        r.add_post("/collections/{name}/points/search", self.search)
        r.add_post("/collections/{name}/points/query", self.query)
        r.add_get("/metrics", self.metrics)
        r.add_get("/telemetry", self.telemetry)
        return app

    async def telemetry(self, request):
        """GET /telemetry with Qdrant's documented fields (api.qdrant.tech, "Collect telemetry
        data": result.collections.number_of_collections, result.requests.rest.responses by
        "METHOD /route" and status: count, avg/min/max_duration_micros,
        total_duration_micros), counted from what this fake served, as for /metrics."""
        rest: dict = {}
        for (method, endpoint, status), n in sorted(self.responses.items()):
            total = self.durations.get((method, endpoint, status), 0.0) * 1e6
            rest.setdefault(f"{method} {endpoint}", {})[str(status)] = {
                "count": n, "avg_duration_micros": total / n, "total_duration_micros": int(total),
                "min_duration_micros": None, "max_duration_micros": None}
        result = {"id": "fake", "app": {"name": "qdrant", "version": self.version},
                  "collections": {"number_of_collections": len(self.collections)},
                  "requests": {"rest": {"responses": rest}, "grpc": {"responses": {}}}}
        return web.json_response({"result": result, "status": "ok", "time": 0.0})

    async def metrics(self, request):
        """Qdrant's documented Prometheus names (qdrant.tech, "Monitoring"): rest_responses_total
        by method, endpoint (the route's pattern) and status, counted from what this fake served
        (everything but /metrics and the health routes), and collections_total."""
        lines = ["# HELP rest_responses_total total number of responses",
                 "# TYPE rest_responses_total counter"]
        for (method, endpoint, status), n in sorted(self.responses.items()):
            lines.append(f'rest_responses_total{{method="{method}",endpoint="{endpoint}",'
                         f'status="{status}"}} {n}')
        lines += ["# HELP collections_total number of collections", "# TYPE collections_total gauge",
                  f"collections_total {len(self.collections)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    @web.middleware
    async def auth(self, request: web.Request, handler):
        self.requests.append((request.method, request.path))
        if self.api_key and request.path not in HEALTH:
            given = request.headers.get("api-key")
            bearer = request.headers.get("Authorization", "")
            if bearer.startswith("Bearer "):
                given = given or bearer[7:]
            if given is None:
                return web.Response(status=401, text="Must provide an API key or an "
                                    "Authorization bearer token")
            if given != self.api_key:
                return web.Response(status=403, text="Invalid API key or JWT")
        t0 = time.perf_counter()
        resp = await handler(request)
        if request.path != "/metrics" and request.path not in HEALTH:
            route = request.match_info.route.resource
            key = (request.method, route.canonical if route is not None else request.path, resp.status)
            self.responses[key] = self.responses.get(key, 0) + 1
            self.durations[key] = self.durations.get(key, 0.0) + time.perf_counter() - t0
        return resp

    def _coll(self, request):
        name = request.match_info["name"]
        return name, self.collections.get(name)

    async def _json(self, request):
        try:
            return await request.json()
        except ValueError:
            return None

    # -- handlers -------------------------------------------------------------------------
    async def root(self, request):
        return web.json_response({"title": "qdrant - vector search engine",
                                  "version": self.version, "commit": "fake"})

    async def health(self, request):
        return web.Response(text=HEALTH[request.path])

    async def list_collections(self, request):
        t0 = time.perf_counter()
        return _ok({"collections": [{"name": n} for n in sorted(self.collections)]}, t0)

    async def get_collection(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        if coll is None:
            return _error(f"Not found: Collection `{name}` doesn't exist!", 404, t0)
        return _ok(coll.info(), t0)

    async def create_collection(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        body = await self._json(request)
        if coll is not None:
            return _error(f"Wrong input: Collection `{name}` already exists!", 409, t0)
        vectors = (body or {}).get("vectors")
        if not isinstance(vectors, dict) or not isinstance(vectors.get("size"), int) \
                or vectors["size"] < 1 or vectors.get("distance") not in ("Cosine", "Euclid", "Dot"):
            return _error("Format error in JSON body: vectors: expected {size, distance}", 400, t0)
        self.collections[name] = Collection(self.force_dimension or vectors["size"],
                                            vectors["distance"],
                                            body.get("hnsw_config") or {},
                                            body.get("optimizers_config") or {})
        return _ok(True, t0)

    async def delete_collection(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        return _ok(self.collections.pop(name, None) is not None, t0)

    async def create_index(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        if coll is None:
            return _error(f"Not found: Collection `{name}` doesn't exist!", 404, t0)
        body = await self._json(request) or {}
        coll.payload_schema[body.get("field_name")] = {"data_type": body.get("field_schema"),
                                                       "points": len(coll.points)}
        coll.op_id += 1
        return _ok({"operation_id": coll.op_id, "status": "completed"}, t0)

    async def upsert(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        if coll is None:
            return _error(f"Not found: Collection `{name}` doesn't exist!", 404, t0)
        body = await self._json(request)
        points = (body or {}).get("points")
        if not isinstance(points, list):
            return _error("Format error in JSON body: missing field `points`", 400, t0)
        staged = []
        for p in points:
            pid = _point_id(p.get("id"))
            if pid is None:
                return _error(f"Format error in JSON body: value {p.get('id')!r} is not a valid "
                              "point ID, valid values are either an unsigned integer or a UUID", 400, t0)
            vec = np.asarray(p.get("vector"), dtype=np.float32)
            if vec.ndim != 1 or len(vec) != coll.size:
                return _error(f"Wrong input: Vector dimension error: expected dim: {coll.size}, "
                              f"got {vec.shape[-1] if vec.ndim else 0}", 400, t0)
            if coll.distance == "Cosine":
                norm = float(np.linalg.norm(vec))
                vec = vec / norm if norm > 0 else vec
            staged.append((pid, vec, p.get("payload") or {}))
        for pid, vec, payload in staged:
            coll.points[pid] = (vec, payload)
        coll._matrix = None
        coll.yellow_polls = self.indexing_polls
        coll.op_id += 1
        return _ok({"operation_id": coll.op_id, "status": "completed"}, t0)

    async def retrieve(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        if coll is None:
            return _error(f"Not found: Collection `{name}` doesn't exist!", 404, t0)
        body = await self._json(request) or {}
        out = []
        for raw in body.get("ids") or []:
            pid = _point_id(raw)
            if pid in coll.points:
                vec, payload = coll.points[pid]
                item = {"id": pid}
                if body.get("with_payload", True):
                    item["payload"] = payload
                if body.get("with_vector", False):
                    item["vector"] = [float(v) for v in vec]
                out.append(item)
        return _ok(out, t0)

    async def count(self, request):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        if coll is None:
            return _error(f"Not found: Collection `{name}` doesn't exist!", 404, t0)
        return _ok({"count": len(coll.points)}, t0)

    def _search(self, coll: Collection, vector, limit: int, flt) -> list[dict] | str:
        q = np.asarray(vector, dtype=np.float64)
        if q.ndim != 1 or len(q) != coll.size:
            return (f"Wrong input: Vector dimension error: expected dim: {coll.size}, got "
                    f"{q.shape[-1] if q.ndim else 0}")
        ids, mat = coll.matrix()
        if flt:
            keep = [j for j, pid in enumerate(ids) if _matches(coll.points[pid][1], flt)]
            ids = [ids[j] for j in keep]
            mat = mat[keep]
        x = mat.astype(np.float64)
        if coll.distance == "Cosine":
            q = q / max(np.linalg.norm(q), 1e-30)
            scores = x @ q
            order = np.argsort(-scores, kind="stable")
        elif coll.distance == "Dot":
            scores = x @ q
            order = np.argsort(-scores, kind="stable")
        else:
            scores = np.sqrt(((x - q) ** 2).sum(axis=1))
            order = np.argsort(scores, kind="stable")
        order = order[self.skip:self.skip + limit]
        self.searches += 1
        return [{"id": ids[j], "version": 0, "score": float(scores[j])} for j in order]

    async def _search_request(self, request, field: str):
        t0 = time.perf_counter()
        name, coll = self._coll(request)
        if coll is None:
            return None, _error(f"Not found: Collection `{name}` doesn't exist!", 404, t0)
        body = await self._json(request)
        if not isinstance(body, dict) or field not in body:
            return None, _error(f"Format error in JSON body: missing field `{field}`", 400, t0)
        limit = int(body.get("limit", 10))
        res = self._search(coll, body[field], limit, body.get("filter"))
        if isinstance(res, str):
            return None, _error(res, 400, t0)
        return (res, t0), None

    async def search(self, request):
        out, err = await self._search_request(request, "vector")
        return err if err is not None else _ok(out[0], out[1])

    async def query(self, request):
        out, err = await self._search_request(request, "query")
        return err if err is not None else _ok({"points": out[0]}, out[1])


# ------------------------------------------------------------------------------- helpers

async def start(fake: FakeQdrant, host: str = "127.0.0.1", port: int = 0):
    """Start the fake on host:port (0 = a free port); returns (runner, "http://host:port")."""
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    return runner, f"http://{host}:{bound}"


def main(argv: list[str]) -> int:
    if "--version" in argv:
        print(f"qdrant {FAKE_VERSION}")
        return 0
    skip = int(argv[argv.index("--skip") + 1]) if "--skip" in argv else 0
    host = os.environ.get("QDRANT__SERVICE__HOST", "127.0.0.1")
    port = int(os.environ.get("QDRANT__SERVICE__HTTP_PORT", "6333"))
    storage = os.environ.get("QDRANT__STORAGE__STORAGE_PATH")
    if storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    fake = FakeQdrant(api_key=os.environ.get("QDRANT__SERVICE__API_KEY") or None, skip=skip)
    print(f"FAKE qdrant {FAKE_VERSION} (tests/fakes/fake_qdrant.py) listening on "
          f"{host}:{port}, api key {'on' if fake.api_key else 'off'}", flush=True)
    web.run_app(fake.app(), host=host, port=port, print=None, access_log=None,
                handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
