"""S3 object storage (any S3 endpoint; MinIO; SeaweedFS): GET / PUT / HEAD / LIST of objects.

Two drivers, the same requests and records (`workload.driver`):

  sigv4-aiohttp (default)  aiohttp, one pooled connection per worker, every request signed by
                           botocore's own SigV4 signer (botocore.auth.S3SigV4Auth: no
                           hand-rolled signing). Payload bodies are reused, so each body's
                           SHA-256 is computed once and handed to the signer (the signature
                           still covers it and the server still checks it); a request that
                           repeats another's method, URL and body within its second reuses its
                           headers, the same bytes (aifb.clients.sigv4).
  aiobotocore              the AWS SDK (aiobotocore) for every request.

Why two: on loopback aiobotocore spends ~0.75-0.9 ms of client CPU per request (request
serialisation, event hooks, response parsing) where the server needs ~0.1-0.3 ms for a small
object, so with aiobotocore small-object figures mostly measure the SDK (measured against
SeaweedFS here: 4 KiB GET at concurrency 4, 635/s with aiobotocore vs 2,380/s with
sigv4-aiohttp; client CPU 850 vs 180 µs per request). Bucket set-up, validation and preloading
always use aiobotocore (no hot path there).

Endpoint: http(s)://host[:port][?region=R&addressing=path|virtual] (region default us-east-1,
path-style addressing by default, as S3-compatible servers expect). Credentials: secrets
{"access_key", "secret_key"} (service.access_key_env / access_key_file / secret_key_env /
secret_key_file, see secrets_from_spec), else the environment's AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY; they never appear in a message, a record or describe().

Workload (workflow/schemas/workloads/s3.schema.yaml): `ops` weights over get, put, stat (HEAD),
list (ListObjectsV2 of the prefix); `objects` keys `{key_prefix}{index:08d}` in `bucket`; object
sizes fixed (`object_size: 4KiB`) or a distribution (`object_size: {sizes: [4KiB, 1MiB],
weights: [3, 1]}`): each key gets one size for the whole run (smooth weighted round robin over
the key indices: exact proportions, interleaved, the same in every client), so a PUT rewrites
an object with its own size and a GET of it reads that size back. prepare() (client 0) creates
the bucket (`create_bucket`, default true) and writes every object once (`preload`, default
true) so that GETs hit. Keys are drawn uniformly, seeded per worker.

Records: bytes_out = PUT payload, bytes_in = GET payload (bytes actually read), so summary's
MiB/s is payload; GET records t_first = when the response status and headers have arrived
(the body not yet read): time to first byte. Extra fields: `size` (object bytes; get, put,
stat) and `keys` (list). Errors are named by the S3 error code (NoSuchKey, SlowDown, ...), or
HTTP<status>, ConnectionError, Timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from urllib.parse import parse_qsl, quote

from aifb import endpoints
from aifb.credentials import read_secret_file
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.units import parse_size
from aifb.clients import register
from aifb.clients.base import CoroutineClient, OpMix, RequestError
from aifb.clients.sigv4 import PayloadSigner

DEFAULT_REGION = "us-east-1"
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
OPS = ("get", "put", "stat", "list")
DRIVERS = ("sigv4-aiohttp", "aiobotocore")
MAX_OBJECT = 5 * 1024 ** 3          # a single PUT's limit in S3
READ_CHUNK = 1 << 20
SETUP_TIMEOUT_S = 30.0
PRELOAD_PARALLEL = 8
PRECOMPUTE_URLS_MAX = 100_000
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9/._-]*$")
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,300})</Message>")
_KEYCOUNT = re.compile(rb"<KeyCount>(\d+)</KeyCount>")
_DEFAULTS = {"ops": {"get": 1.0}, "bucket": "aifb-bench", "create_bucket": True, "objects": 100,
             "object_size": 4096, "key_prefix": "aifb/", "preload": True, "list_max_keys": 100,
             "driver": "sigv4-aiohttp", "checksums": False}


# --------------------------------------------------------------------------- secrets

LOCAL_ACCESS_KEY = "aifb-local"                  # placeholders for a local throwaway server
LOCAL_SECRET_KEY = "aifb-local-unauthenticated"  # started without configured credentials
LOCAL_SOURCE = ("none configured: the local throwaway server was started with placeholder "
                "credentials (no authentication to speak of; loopback only)")


def secrets_from_spec(spec: dict, local_default: bool = False) -> dict:
    """S3 credentials named by the recipe's service block: access_key_env / access_key_file and
    secret_key_env / secret_key_file (defaults: the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    environment variables). Returns {"access_key", "secret_key", "source"}; "source" names where
    they came from (names only, never values). When none at all are configured and
    `local_default` (a server aifb deploys itself), placeholders are returned with
    "local": True; otherwise a missing credential raises ServiceError naming what to set."""
    named = any(spec.get(f"{w}_{s}") for w in ("access_key", "secret_key") for s in ("env", "file"))
    if local_default and not named and not (os.environ.get(ACCESS_KEY_ENV) or
                                            os.environ.get(SECRET_KEY_ENV)):
        return {"access_key": LOCAL_ACCESS_KEY, "secret_key": LOCAL_SECRET_KEY,
                "source": LOCAL_SOURCE, "local": True}
    out: dict = {}
    source = []
    for what, env_default in (("access_key", ACCESS_KEY_ENV), ("secret_key", SECRET_KEY_ENV)):
        env = spec.get(f"{what}_env")
        path = spec.get(f"{what}_file")
        if path:
            out[what] = read_secret_file(f"{what}_file", path)
            source.append(f"{what} from file {path}")
        elif env:
            if env not in os.environ:
                raise ServiceError(f"service.{what}_env names {env}, which is not set in the "
                                   "environment")
            out[what] = os.environ[env]
            source.append(f"{what} from ${env}")
        elif os.environ.get(env_default):
            out[what] = os.environ[env_default]
            source.append(f"{what} from ${env_default}")
        if not out.get(what):
            raise ServiceError(_missing_credentials_message())
    out["source"] = ", ".join(source)
    return out


def _missing_credentials_message() -> str:
    return (f"S3 credentials are missing: set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} in the "
            "environment, or name other variables with service.access_key_env / "
            "secret_key_env, or files with service.access_key_file / secret_key_file")


def credentials(secrets: dict | None) -> tuple[str, str, str]:
    """(access key, secret key, source) from the runner's secrets, else the environment."""
    secrets = secrets or {}
    access = secrets.get("access_key")
    secret = secrets.get("secret_key") or secrets.get("password")
    source = secrets.get("source") or "runner secrets"
    if not access or not secret:
        env = {}
        try:
            env = secrets_from_spec({})
        except ServiceError:
            pass
        access = access or env.get("access_key")
        secret = secret or env.get("secret_key")
        source = env.get("source") or source
    if not access or not secret:
        raise ServiceError(_missing_credentials_message())
    return access, secret, source


# --------------------------------------------------------------------------- endpoint

class Endpoint:
    __slots__ = ("url", "scheme", "host", "port", "region", "addressing")

    def __init__(self, url, scheme, host, port, region, addressing):
        self.url, self.scheme, self.host, self.port = url, scheme, host, port
        self.region, self.addressing = region, addressing

    @property
    def label(self) -> str:
        return self.url

    def object_base(self, bucket: str) -> str:
        """URL prefix of the bucket's objects (no trailing slash)."""
        if self.addressing == "virtual":
            netloc = f"{bucket}.{self.host}" + (f":{self.port}" if self.port else "")
            return f"{self.scheme}://{netloc}"
        return f"{self.url}/{bucket}"

    def __repr__(self) -> str:
        return f"{self.url} (region {self.region}, {self.addressing}-style)"


def parse_endpoint(endpoint: str) -> Endpoint:
    parts = endpoints.split("s3", endpoint)
    port = parts.port
    if parts.username:
        raise ServiceError("S3 endpoint must not hold credentials: give them through "
                           "service.access_key_env / secret_key_env (or *_file)")
    if parts.path.strip("/"):
        raise ServiceError(f"S3 endpoint {endpoint!r}: a path is not supported (the bucket is "
                           "workload.bucket)")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"region", "addressing"}
    if unknown:
        raise ServiceError(f"S3 endpoint: unknown parameter(s) {sorted(unknown)} (supported: "
                           "region, addressing)")
    addressing = query.get("addressing", "path")
    if addressing not in ("path", "virtual"):
        raise ServiceError(f"S3 endpoint: addressing={addressing!r} is not path or virtual")
    host = parts.hostname
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return Endpoint(f"{parts.scheme}://{netloc}", parts.scheme, host, port,
                    query.get("region") or DEFAULT_REGION, addressing)


# --------------------------------------------------------------------------- workload

def size_mix(spec) -> tuple[list[int], list[float]]:
    """object_size: a size, or {sizes: [...], weights: [...]} -> (sizes, normalised weights)."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"sizes", "weights"}
        if unknown:
            raise ServiceError(f"S3 workload.object_size: unknown field(s) {sorted(unknown)}")
        raw = spec.get("sizes")
        if not isinstance(raw, list) or not raw:
            raise ServiceError("S3 workload.object_size.sizes must be a non-empty list of sizes")
        weights = spec.get("weights")
        if weights is None:
            weights = [1.0] * len(raw)
        if not isinstance(weights, list) or len(weights) != len(raw):
            raise ServiceError("S3 workload.object_size.weights must list one weight per size")
    else:
        raw, weights = [spec], [1.0]
    try:
        sizes = [parse_size(s) for s in raw]
    except ValueError as exc:
        raise ServiceError(f"S3 workload.object_size: {exc}") from None
    for s in sizes:
        if s < 0 or s > MAX_OBJECT:
            raise ServiceError(f"S3 workload.object_size: {s} bytes is outside 0..5 GiB (a "
                               "single PUT's limit)")
    if len(set(sizes)) != len(sizes):
        raise ServiceError("S3 workload.object_size.sizes lists a size twice")
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise ServiceError("S3 workload.object_size.weights must be numbers") from None
    if any(x < 0 for x in w) or sum(w) <= 0:
        raise ServiceError("S3 workload.object_size.weights must be >= 0 with a positive sum")
    total = sum(w)
    pairs = [(s, x / total) for s, x in zip(sizes, w) if x > 0]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def assign_sizes(n: int, sizes: list[int], weights: list[float]) -> list[int]:
    """One size per key index: smooth weighted round robin (every prefix of the keys holds each
    size in proportion to its weight, within one object)."""
    current = [0.0] * len(sizes)
    out = []
    for _ in range(n):
        for k, w in enumerate(weights):
            current[k] += w
        best = max(range(len(sizes)), key=lambda k: (current[k], -k))
        current[best] -= 1.0
        out.append(sizes[best])
    return out


def _body(size: int) -> bytes:
    return random.Random(f"aifb-s3-body:{size}").randbytes(size)


def scrub_credentials(text, secrets: tuple) -> str:
    """text without the access key id and secret key (aifb.endpoints.scrub: on one line; keys
    under 4 characters are left alone, as they would match ordinary words)."""
    return endpoints.scrub(text, *secrets, one_line=True, min_len=4)


def _xml_error(body: bytes, status: int) -> tuple[str, str]:
    code = _CODE.search(body or b"")
    msg = _MESSAGE.search(body or b"")
    return ((code.group(1).decode("utf-8", "replace") if code else f"HTTP{status}"),
            (msg.group(1).decode("utf-8", "replace") if msg else f"HTTP status {status}"))


# --------------------------------------------------------------------------- client

@register("s3")
class S3Client(CoroutineClient):
    """One logical client: a pool of `connections` HTTP connections (one per worker)."""

    kind = "s3"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self._ep = parse_endpoint(endpoint)
        self.label = self._ep.label
        self._access, self._secret, self._cred_source = credentials(secrets)
        wl = {**_DEFAULTS, **(workload or {})}
        self._mix = OpMix(wl["ops"], OPS, "S3 workload.ops")
        self.ops = self._mix.weights
        self.bucket = str(wl["bucket"])
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise ServiceError(f"S3 workload.bucket {self.bucket!r} is not a valid bucket name "
                               "(3-63 characters: lower-case letters, digits, '.', '-')")
        self.create_bucket = bool(wl["create_bucket"])
        self.objects = int(wl["objects"])
        if self.objects < 1:
            raise ServiceError("S3 workload.objects must be at least 1")
        self.key_prefix = str(wl["key_prefix"])
        if not _KEY_PREFIX.match(self.key_prefix):
            raise ServiceError(f"S3 workload.key_prefix {self.key_prefix!r}: use letters, digits "
                               "and / . _ - only")
        self.size_set, self.size_weights = size_mix(wl["object_size"])
        self.sizes = assign_sizes(self.objects, self.size_set, self.size_weights)
        self.keys = [f"{self.key_prefix}{i:08d}" for i in range(self.objects)]
        self.preload = bool(wl["preload"])
        self.list_max_keys = int(wl["list_max_keys"])
        if not 1 <= self.list_max_keys <= 1000:
            raise ServiceError("S3 workload.list_max_keys must be within 1..1000")
        self.driver = str(wl["driver"])
        if self.driver not in DRIVERS:
            raise ServiceError(f"S3 workload.driver {self.driver!r} is not one of {', '.join(DRIVERS)}")
        self.checksums = bool(wl["checksums"])
        self.seed = seed
        self._bodies: dict[int, bytes] = {}
        self._sha: dict[int, str] = {}
        self._rnds: list = []
        self._cur: list[str] = []
        self._down: list[bool] = []
        self._boto_cm = None
        self._boto = None
        self._session = None
        self._signer = None
        self._base = self._ep.object_base(self.bucket)
        self._urls = [f"{self._base}/{k}" for k in self.keys]
        self._yurls: list = []
        self._list_url = None
        self._list_yurl = None

    # -- set-up ---------------------------------------------------------------------------
    def _config(self, pool: int, connect_s: float, read_s: float):
        from aiobotocore.config import AioConfig
        return AioConfig(
            max_pool_connections=max(1, pool), connect_timeout=connect_s, read_timeout=read_s,
            retries={"mode": "standard", "total_max_attempts": 1},
            s3={"addressing_style": self._ep.addressing},
            request_checksum_calculation="when_supported" if self.checksums else "when_required",
            response_checksum_validation="when_supported" if self.checksums else "when_required",
            user_agent_extra="aifb")

    async def _open_boto(self, pool: int, connect_s: float = 10.0, read_s: float = 120.0):
        return await _open_boto(self._ep, self._access, self._secret,
                                self._config(pool, connect_s, read_s))

    def _body_for(self, size: int) -> bytes:
        body = self._bodies.get(size)
        if body is None:
            body = self._bodies[size] = _body(size)
            self._sha[size] = hashlib.sha256(body).hexdigest()
        return body

    async def startup(self, connections: int) -> None:
        self._rnds = [random.Random(f"aifb-s3:{self.seed}:{w}").random for w in range(connections)]
        self._cur = [next(iter(self.ops))] * connections
        self._down = [False] * connections
        if "put" in self.ops:
            for size in self.size_set:
                self._body_for(size)
        self._boto_cm, self._boto = await self._open_boto(connections)
        if self.driver == "sigv4-aiohttp":
            import aiohttp
            from botocore.credentials import Credentials

            self._signer = PayloadSigner(Credentials(self._access, self._secret), "s3",
                                                self._ep.region)
            connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0,
                                             ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
            q = f"list-type=2&max-keys={self.list_max_keys}&prefix={quote(self.key_prefix, safe='-_.~')}"
            self._list_url = (f"{self._base}?{q}" if self._ep.addressing == "path"
                              else f"{self._base}/?{q}")
            import yarl  # aiohttp's URL type: parsed once here, not per request

            self._list_yurl = yarl.URL(self._list_url, encoded=True)
            if self.objects <= PRECOMPUTE_URLS_MAX:
                self._yurls = [yarl.URL(u, encoded=True) for u in self._urls]
            else:  # ~0.5 KB each: built per request instead (a few µs)
                self._yurls = _LazyURLs(self._urls)

    async def validate(self) -> None:
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                exists = await self._bucket_exists()
                if not exists and not self.create_bucket:
                    raise ServiceError(
                        f"S3 at {self.label}: bucket {self.bucket!r} does not exist and "
                        "workload.create_bucket is false (create it, or set create_bucket: true)")
                if not self.preload and ({"get", "stat"} & set(self.ops)):
                    if not exists:
                        raise ServiceError(
                            f"S3 at {self.label}: bucket {self.bucket!r} does not exist, so "
                            "there is nothing to GET with workload.preload false (set preload: "
                            "true to write the objects before measuring)")
                    await self._check_object(self.keys[0])
        except TimeoutError:
            raise ServiceError(f"S3 at {self.label} did not answer within {SETUP_TIMEOUT_S:g} s") from None

    async def _bucket_exists(self) -> bool:
        try:
            await self._boto.list_objects_v2(Bucket=self.bucket, MaxKeys=1, Prefix=self.key_prefix)
            return True
        except Exception as exc:  # noqa: BLE001
            code = _client_error_code(exc)
            if code == "NoSuchBucket":
                return False
            raise ServiceError(self._setup_message(exc, f"listing bucket {self.bucket!r}")) from None

    async def _check_object(self, key: str) -> None:
        try:
            await self._boto.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ServiceError(
                    f"S3 at {self.label}: object {key!r} does not exist in bucket "
                    f"{self.bucket!r} and workload.preload is false (set preload: true to write "
                    "the objects before measuring)") from None
            raise ServiceError(self._setup_message(exc, f"HEAD {key!r}")) from None

    def _setup_message(self, exc: BaseException, doing: str) -> str:
        return setup_error_message(exc, self.label, doing, self._cred_source,
                                   (self._access, self._secret))

    async def prepare(self) -> None:
        try:
            async with asyncio.timeout(max(SETUP_TIMEOUT_S, self.objects * 0.5)):
                if not await self._bucket_exists():
                    await self._create_bucket()
                if self.preload and ({"get", "stat", "list"} & set(self.ops)):
                    await self._preload()
        except TimeoutError:
            raise ServiceError(f"S3 at {self.label}: creating the bucket or writing the objects "
                               "did not finish in time") from None

    async def _create_bucket(self) -> None:
        kw = {}
        if self._ep.region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": self._ep.region}
        try:
            await self._boto.create_bucket(Bucket=self.bucket, **kw)
        except Exception as exc:  # noqa: BLE001
            if _client_error_code(exc) != "BucketAlreadyOwnedByYou":
                raise ServiceError(self._setup_message(exc, f"creating bucket {self.bucket!r}")) from None

    async def _preload(self) -> None:
        cm, boto = await self._open_boto(PRELOAD_PARALLEL)
        sem = asyncio.Semaphore(PRELOAD_PARALLEL)
        bodies = {s: self._body_for(s) for s in self.size_set}

        async def put(i: int) -> None:
            async with sem:
                await boto.put_object(Bucket=self.bucket, Key=self.keys[i],
                                      Body=bodies[self.sizes[i]])

        try:
            await asyncio.gather(*(put(i) for i in range(self.objects)))
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(self._setup_message(exc, "writing the objects (preload)")) from None
        finally:
            await cm.__aexit__(None, None, None)

    async def shutdown(self) -> None:
        if self._session is not None:
            try:
                await self._session.close()
            except Exception:
                pass
            self._session = None
        if self._boto_cm is not None:
            try:
                await self._boto_cm.__aexit__(None, None, None)
            except Exception:
                pass
            self._boto_cm = self._boto = None

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        """A real signed request (ListBuckets): reachable, speaks S3, accepts the credentials."""
        from aiobotocore.config import AioConfig

        ep = parse_endpoint(endpoint)
        access, secret, source = credentials(secrets)
        t = max(0.1, timeout_s)
        cfg = AioConfig(connect_timeout=t, read_timeout=t,
                        retries={"mode": "standard", "total_max_attempts": 1},
                        s3={"addressing_style": ep.addressing})
        cm, boto = await _open_boto(ep, access, secret, cfg)
        try:
            async with asyncio.timeout(t + 1):
                await boto.list_buckets()
        except TimeoutError:
            raise ServiceError(f"S3 at {ep.label} did not answer ListBuckets within {t:g} s") from None
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(setup_error_message(exc, ep.label, "ListBuckets", source,
                                                   (access, secret))) from None
        finally:
            await cm.__aexit__(None, None, None)

    def describe(self) -> dict:
        import aiobotocore
        import aiohttp
        import botocore

        impl = (f"aiohttp {aiohttp.__version__} + botocore {botocore.__version__} SigV4 signer "
                "(botocore.auth.S3SigV4Auth)" if self.driver == "sigv4-aiohttp" else
                f"aiobotocore {aiobotocore.__version__} (botocore {botocore.__version__})")
        return {
            "kind": self.kind,
            "protocol": "S3 REST (SigV4-signed HTTP/1.1)",
            "driver": self.driver,
            "implementation": impl,
            "in_flight_per_connection": 1,
            "endpoint": repr(self._ep),
            "credentials": self._cred_source,
            "bucket": self.bucket,
            "create_bucket": self.create_bucket,
            "ops": self.ops,
            "objects": self.objects,
            "object_sizes": {str(s): round(w, 6) for s, w in zip(self.size_set, self.size_weights)},
            "size_assignment": "one size per key, smooth weighted round robin over key indices",
            "key_format": f"{self.key_prefix}{{index:08d}}",
            "key_distribution": "uniform over the objects, seeded per worker",
            "preload": self.preload,
            "list_max_keys": self.list_max_keys,
            "payload_signing": ("SHA-256 of the body in the signature, computed once per "
                                "distinct body (bodies are reused); a request repeating another's "
                                "method, URL and body within the same second (X-Amz-Date's "
                                "resolution) reuses its signed headers"
                                if self.driver == "sigv4-aiohttp"
                                else "botocore's default (SHA-256 of each body over http)"),
            "checksums": ("CRC checksums when supported" if self.checksums else
                          "only where the API requires them (request_checksum_calculation="
                          "when_required)"),
            "retries": "none (one attempt per request)",
            "t_first": "GET: response status and headers received, body not yet read",
            "bytes": "payload: PUT body out, GET body in (HTTP framing and headers excluded)",
        }

    # -- per request ---------------------------------------------------------------------------
    def _op_name(self, worker: int) -> str:
        return self._cur[worker]

    def build(self, worker: int) -> tuple:
        """(op, object index, signed headers): the draw and the SigV4 signature, before t_start
        (the SDK path signs inside botocore, so there only the draw is built ahead)."""
        rnd = self._rnds[worker]
        op = self._cur[worker] = self._mix.pick(rnd())
        i = int(rnd() * self.objects)
        if self._session is None:
            return op, i, None
        signer = self._signer
        if op == "put":
            size = self.sizes[i]
            headers = signer.sign("PUT", self._urls[i], self._bodies[size], self._sha[size])
        elif op == "list":
            headers = signer.sign("GET", self._list_url)
        else:
            headers = signer.sign("HEAD" if op == "stat" else "GET", self._urls[i])
        return op, i, headers

    async def request(self, worker: int, req: tuple):
        op, i, headers = req
        try:
            if self._session is not None:
                return await self._fast(op, i, headers)
            return await self._sdk(op, i)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            t_end = now_ns()
            etype, msg = _request_error(exc)
            if etype == "ConnectionError":
                self._down[worker] = True  # the engine backs off and calls reconnect()
            return (op, False, etype, scrub_credentials(msg, (self._access, self._secret))[:200],
                    None, None, None, t_end)

    def connected(self, worker: int) -> bool:
        return not self._down[worker]

    async def reconnect(self, worker: int) -> None:
        """The HTTP pool reconnects by itself; this only checks that the server accepts TCP
        connections again, so that the engine's backoff applies while it does not."""
        ep = self._ep
        port = ep.port or (443 if ep.scheme == "https" else 80)
        try:
            _, writer = await asyncio.open_connection(ep.host, port)
        except OSError as exc:
            raise RequestError("ConnectionError", f"cannot reach S3 at {self.label}: "
                               f"{exc.strerror or type(exc).__name__}") from None
        writer.close()
        self._down[worker] = False

    async def _fast(self, op: str, i: int, headers: dict):
        session = self._session
        if op == "get":
            async with session.get(self._yurls[i], headers=headers) as resp:
                t_first = now_ns()
                if resp.status != 200:
                    return self._http_error(op, resp.status, await resp.read(), 0)
                n = 0
                read = resp.content.readany
                while True:
                    chunk = await read()
                    if not chunk:
                        break
                    n += len(chunk)
            t_end = now_ns()
            if resp.content_length is not None and n != resp.content_length:
                return (op, False, "ShortRead", f"read {n} of {resp.content_length} bytes",
                        0, n, t_first, t_end)
            return (op, True, None, None, 0, n, t_first, t_end, {"size": n})
        if op == "put":
            size = self.sizes[i]
            body = self._bodies[size]
            async with session.put(self._yurls[i], data=body, headers=headers) as resp:
                data = await resp.read()
            t_end = now_ns()
            if resp.status != 200:
                return self._http_error(op, resp.status, data, size, t_end)
            return (op, True, None, None, size, 0, None, t_end, {"size": size})
        if op == "stat":
            async with session.head(self._yurls[i], headers=headers) as resp:
                await resp.read()
            t_end = now_ns()
            if resp.status != 200:
                return self._http_error(op, resp.status, b"", 0, t_end)
            return (op, True, None, None, 0, 0, None, t_end, {"size": resp.content_length})
        async with session.get(self._list_yurl, headers=headers) as resp:
            data = await resp.read()
        t_end = now_ns()
        if resp.status != 200:
            return self._http_error(op, resp.status, data, 0, t_end)
        m = _KEYCOUNT.search(data)
        keys = int(m.group(1)) if m else data.count(b"<Key>")
        return (op, True, None, None, 0, 0, None, t_end, {"keys": keys})

    def _http_error(self, op, status, body, bytes_out, t_end=None):
        t_end = t_end or now_ns()
        if not body and status == 404:
            code, msg = "NotFound", "HTTP 404 (no body: HEAD)"
        elif not body and status == 403:
            code, msg = "Forbidden", "HTTP 403 (no body: HEAD)"
        else:
            code, msg = _xml_error(body, status)
        return (op, False, code, scrub_credentials(f"HTTP {status}: {msg}", (self._access, self._secret))[:200],
                bytes_out or None, None, None, t_end)

    async def _sdk(self, op: str, i: int):
        boto = self._boto
        key = self.keys[i]
        if op == "get":
            resp = await boto.get_object(Bucket=self.bucket, Key=key)
            t_first = now_ns()
            body = resp["Body"]
            n = 0
            try:
                while True:
                    chunk = await body.read(READ_CHUNK)
                    if not chunk:
                        break
                    n += len(chunk)
            finally:
                body.close()
            return (op, True, None, None, 0, n, t_first, now_ns(), {"size": n})
        if op == "put":
            size = self.sizes[i]
            await boto.put_object(Bucket=self.bucket, Key=key, Body=self._bodies[size])
            return (op, True, None, None, size, 0, None, now_ns(), {"size": size})
        if op == "stat":
            resp = await boto.head_object(Bucket=self.bucket, Key=key)
            return (op, True, None, None, 0, 0, None, now_ns(), {"size": resp.get("ContentLength")})
        resp = await boto.list_objects_v2(Bucket=self.bucket, Prefix=self.key_prefix,
                                          MaxKeys=self.list_max_keys)
        return (op, True, None, None, 0, 0, None, now_ns(), {"keys": resp.get("KeyCount", 0)})


@register("minio")
class MinioClient(S3Client):
    """MinIO speaks S3: the same client, recorded as kind minio."""

    kind = "minio"


# --------------------------------------------------------------------------- helpers

class _LazyURLs:
    """urls[i] as a yarl.URL, built when asked (for very large key sets)."""

    def __init__(self, urls: list[str]):
        import yarl
        self._urls, self._url = urls, yarl.URL

    def __getitem__(self, i: int):
        return self._url(self._urls[i], encoded=True)


async def _open_boto(ep: Endpoint, access: str, secret: str, config):
    from aiobotocore.session import get_session

    cm = get_session().create_client("s3", endpoint_url=ep.url, region_name=ep.region,
                                     aws_access_key_id=access, aws_secret_access_key=secret,
                                     config=config)
    client = await cm.__aenter__()
    return cm, client


def _client_error_code(exc: BaseException) -> str | None:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = (resp.get("Error") or {}).get("Code")
        if code:
            return str(code)
        status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return None


_AUTH_HINTS = {
    "InvalidAccessKeyId": "rejected the access key id (InvalidAccessKeyId)",
    "SignatureDoesNotMatch": "rejected the request signature (SignatureDoesNotMatch): the "
                             "secret key is wrong",
    "AccessDenied": "denied access (AccessDenied): the credentials lack permission",
    "InvalidToken": "rejected the session token (InvalidToken)",
    "ExpiredToken": "rejected expired credentials (ExpiredToken)",
    "403": "refused the request (HTTP 403): wrong credentials or no permission",
}


def setup_error_message(exc: BaseException, label: str, doing: str, cred_source: str,
                        secrets: tuple) -> str:
    """A clear, secret-free sentence for a failure outside the measured path."""
    code = _client_error_code(exc)
    if code in _AUTH_HINTS:
        return (f"S3 at {label} {_AUTH_HINTS[code]} while {doing} (credentials: "
                f"{cred_source})")
    if code is not None:
        msg = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") or ""
        return scrub_credentials(f"S3 at {label}: {doing} failed: {code}" + (f": {msg}" if msg else ""),
                                 secrets)[:300]
    etype, msg = _request_error(exc)
    if etype in ("ConnectionError", "Timeout"):
        return scrub_credentials(f"cannot reach S3 at {label}: {msg}", secrets)[:300]
    return scrub_credentials(f"S3 at {label}: {doing} failed: {etype}: {msg}", secrets)[:300]


def _request_error(exc: BaseException) -> tuple[str, str]:
    """(error type, short message) of an exception from either driver."""
    import aiohttp
    import botocore.exceptions as be

    code = _client_error_code(exc)
    if code is not None:
        msg = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") or code
        return code, str(msg)
    if isinstance(exc, (be.ConnectTimeoutError, be.ReadTimeoutError, TimeoutError,
                        asyncio.TimeoutError)):
        return "Timeout", str(exc) or "timed out"
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectionClosedError)):
        inner = (getattr(exc, "kwargs", None) or {}).get("error")
        if isinstance(inner, BaseException):
            return _request_error(inner)
        return "ConnectionError", str(exc)
    if isinstance(exc, ConnectionRefusedError) or isinstance(
            getattr(exc, "os_error", None), ConnectionRefusedError):
        return "ConnectionError", "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = exc.os_error
        return "ConnectionError", (getattr(os_err, "strerror", None) or str(os_err) or str(exc))
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                        be.HTTPClientError, ConnectionError)):
        return "ConnectionError", str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        return "ConnectionError", exc.strerror or type(exc).__name__
    if isinstance(exc, RequestError):
        return exc.type, exc.message
    return type(exc).__name__, str(exc) or type(exc).__name__
