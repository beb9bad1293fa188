"""PostgreSQL: asyncpg, one connection per worker, named prepared statements.

Why asyncpg: it speaks the extended query protocol from Cython with binary I/O; on these
machines one asyncpg process answers a point SELECT at ~38k/s with c=1 (pgbench -S with the
simple protocol: ~21k/s), so the server, not the client, is what gets measured. Every statement
of the hot path is prepared once per connection (Parse), then only Bind/Execute travel: the
server's parser and planner are out of the measurement (as with `pgbench -M prepared`).

Endpoint: postgresql://[user@]host[:port][/database] (postgres:// too). The user defaults to
`postgres`, the database to the user name (libpq's rule). The password comes from
secrets={"password": ...} (service.password_env / password_file); it is never part of a
message, a record or describe().

Workload (workflow/schemas/workloads/postgres.schema.yaml): `ops` weights over
  select  SELECT abalance FROM accounts WHERE aid = $1                (point select by key)
  update  UPDATE accounts SET abalance = abalance + $1 WHERE aid = $2  (autocommit)
  insert  INSERT INTO history (tid, bid, aid, delta, mtime) VALUES (..., CURRENT_TIMESTAMP)
  tpcb    pgbench's TPC-B-like transaction: BEGIN; update accounts; select its balance;
          update tellers; update branches; insert history; COMMIT
over pgbench's schema (branches, tellers, accounts, history) with a table prefix (default
`aifb_`; `pgbench_` uses tables made by `pgbench -i`). Size: `scale` (pgbench's: 1 branch, 10
tellers, 100,000 accounts per unit) or `table_rows` (accounts; branches = ceil(rows / 100,000)).
With `prepare: true` (default) client 0 drops and re-creates the four prefixed tables and loads
them with COPY before the load (seeded balances, primary keys built after the load, then
VACUUM ANALYZE, as pgbench -i does). Keys are drawn uniformly, seeded per worker.

Records: op, timings; bytes_in/bytes_out are None (rows, not payload). A select that finds no
row or an update that changes none is an error ("NotFound"): the key range and the table
disagree. Server errors (deadlock, serialization, ...) are results named by the SQLSTATE class
(e.g. DeadlockDetectedError); a lost connection is reopened by the engine.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
from urllib.parse import unquote

from aifb import endpoints
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.clients import register
from aifb.clients.base import CoroutineClient, OpMix, RequestError

DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
CONNECT_TIMEOUT_S = 10.0
ACCOUNTS_PER_SCALE = 100_000
TELLERS_PER_SCALE = 10
COPY_BATCH = 50_000
OPS = ("select", "update", "insert", "tpcb")
_DEFAULTS = {"ops": {"select": 1.0}, "table_prefix": "aifb_", "prepare": True}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
SERVER_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes",
                   "wal_level", "shared_buffers", "max_connections", "work_mem",
                   "effective_cache_size", "checkpoint_timeout", "max_wal_size",
                   "default_transaction_isolation", "jit")


def _asyncpg():
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        raise ServiceError("the postgres client needs asyncpg: pip install asyncpg==0.32.0") from None
    return asyncpg


# --------------------------------------------------------------------------- endpoint

class Endpoint:
    __slots__ = ("host", "port", "user", "database", "password")

    def __init__(self, host, port, user, database, password=None):
        self.host, self.port, self.user, self.database = host, port, user, database
        self.password = password

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def scrub(self, text) -> str:
        """An error text on one line, without this endpoint's password."""
        return endpoints.scrub(text, self.password, one_line=True)

    def with_database(self, database: str) -> "Endpoint":
        return Endpoint(self.host, self.port, self.user, database, self.password)

    def __repr__(self) -> str:  # never shows the password
        return f"postgresql://{self.user}{':***' if self.password else ''}@{self.label}/{self.database}"


def parse_endpoint(endpoint: str, secrets: dict | None = None) -> Endpoint:
    parts = endpoints.split("postgres", endpoint)
    if parts.query:
        raise ServiceError(f"postgres endpoint {endpoint!r}: query parameters are not "
                           "supported (TLS and options are not implemented)")
    user = unquote(parts.username) if parts.username else DEFAULT_USER
    database = unquote(parts.path.strip("/")) or user
    password = (secrets or {}).get("password")
    return Endpoint(parts.hostname, parts.port or DEFAULT_PORT, user, database, password or None)


def drop(conn) -> None:
    """Close a connection at once, whatever its protocol state (None: nothing); never raises."""
    if conn is not None:
        try:
            conn.terminate()
        except Exception:
            pass


def connect_error(exc: BaseException, ep: Endpoint, timeout_s: float) -> RequestError:
    """A connection failure as a short, secret-free RequestError naming the endpoint."""
    asyncpg = _asyncpg()
    where = f"postgres at {ep.label}"
    pe = asyncpg.exceptions
    if isinstance(exc, pe.InvalidPasswordError) and not ep.password:
        return RequestError("AuthError", f"{where} asks for a password for user {ep.user!r} and "
                            "none was given (set service.password_env or password_file)")
    if isinstance(exc, pe.InvalidPasswordError):
        return RequestError("AuthError", f"{where} rejected the password for user {ep.user!r} "
                            "(password authentication failed): check service.password_env / "
                            "password_file")
    if isinstance(exc, pe.InvalidAuthorizationSpecificationError):
        return RequestError("AuthError", f"{where} refused user {ep.user!r}: "
                            f"{ep.scrub(exc)[:160]}")
    if isinstance(exc, pe.InvalidCatalogNameError):
        return RequestError("NoSuchDatabase", f"{where}: database {ep.database!r} does not exist")
    if isinstance(exc, pe.TooManyConnectionsError):
        return RequestError("TooManyConnections",
                            f"{where} refused a connection: too many clients ("
                            f"{ep.scrub(exc)[:100]}); lower load.clients x "
                            "load.concurrency or raise the server's max_connections")
    if isinstance(exc, pe.CannotConnectNowError):
        return RequestError("NotReady", f"{where} is not accepting connections yet: "
                            f"{ep.scrub(exc)[:120]}")
    if isinstance(exc, pe.PostgresError):
        return RequestError(type(exc).__name__, f"{where}: {ep.scrub(exc)[:160]}")
    if isinstance(exc, ConnectionRefusedError):
        return RequestError("ConnectionRefused", f"cannot reach {where}: connection refused")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return RequestError("Timeout", f"cannot reach {where}: no connection within {timeout_s:g} s")
    if isinstance(exc, socket.gaierror):
        return RequestError("ConnectionError", f"cannot reach {where}: cannot resolve host {ep.host!r}")
    if isinstance(exc, OSError):
        return RequestError("ConnectionError",
                            f"cannot reach {where}: {exc.strerror or type(exc).__name__}")
    if isinstance(exc, asyncpg.InterfaceError):  # e.g. a password is required but none given
        msg = ep.scrub(exc)
        if "password" in msg.lower():
            return RequestError("AuthError", f"{where} asks for a password for user {ep.user!r} "
                                "and none was given (set service.password_env or password_file)")
        return RequestError("ConnectionError", f"{where}: {msg[:160]}")
    return RequestError(type(exc).__name__, f"{where}: {ep.scrub(exc)[:160]}")


async def connect(ep: Endpoint, timeout_s: float = CONNECT_TIMEOUT_S):
    """One asyncpg connection (TCP_NODELAY is asyncpg's default); RequestError on failure."""
    asyncpg = _asyncpg()
    try:
        return await asyncpg.connect(host=ep.host, port=ep.port, user=ep.user,
                                     password=ep.password, database=ep.database,
                                     timeout=timeout_s, ssl=False,
                                     server_settings={"application_name": "aifb"})
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a clear message
        if not isinstance(exc, Exception):
            raise
        raise connect_error(exc, ep, timeout_s) from None


async def server_facts(conn) -> dict:
    rows = await conn.fetch("SELECT name, current_setting(name) AS value FROM pg_settings "
                            "WHERE name = ANY($1::text[]) ORDER BY name", list(SERVER_SETTINGS))
    return {r["name"]: r["value"] for r in rows}


# --------------------------------------------------------------------------- workload

def sizing(wl: dict) -> tuple[int, int, int]:
    """(branches, tellers, accounts) from `scale` or `table_rows`."""
    if wl.get("scale") is not None and wl.get("table_rows") is not None:
        raise ServiceError("postgres workload: give either scale or table_rows, not both")
    if wl.get("table_rows") is not None:
        accounts = int(wl["table_rows"])
        if accounts < 1:
            raise ServiceError("postgres workload.table_rows must be at least 1")
        branches = max(1, math.ceil(accounts / ACCOUNTS_PER_SCALE))
    else:
        scale = int(wl.get("scale", 1))
        if scale < 1:
            raise ServiceError("postgres workload.scale must be at least 1")
        branches, accounts = scale, scale * ACCOUNTS_PER_SCALE
    return branches, branches * TELLERS_PER_SCALE, accounts


class _Stmts:
    __slots__ = ("select", "update", "insert", "t_upd_acc", "t_sel_acc", "t_upd_tel", "t_upd_br",
                 "t_ins_hist", "begin", "commit", "rollback")


@register("postgres")
class PostgresClient(CoroutineClient):
    """`connections` asyncpg connections, one per worker, one statement in flight on each."""

    kind = "postgres"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self._ep = parse_endpoint(endpoint, secrets)
        self.label = self._ep.label
        wl = {**_DEFAULTS, **(workload or {})}
        self._mix = OpMix(wl["ops"], OPS, "postgres workload.ops")
        self.ops = self._mix.weights
        self.prefix = str(wl["table_prefix"])
        if not _IDENT.match(self.prefix):
            raise ServiceError(f"postgres workload.table_prefix {self.prefix!r} must be a lower-case "
                               "SQL identifier prefix (letters, digits, _)")
        self.branches, self.tellers, self.accounts = sizing(wl)
        self.scale_given = wl.get("scale")
        self.load_data = bool(wl["prepare"])
        self.seed = seed
        t = self.tables = {n: f"{self.prefix}{n}" for n in ("branches", "tellers", "accounts", "history")}
        self.sql = {
            "select": f"SELECT abalance FROM {t['accounts']} WHERE aid = $1",
            "update": f"UPDATE {t['accounts']} SET abalance = abalance + $1 WHERE aid = $2",
            "insert": (f"INSERT INTO {t['history']} (tid, bid, aid, delta, mtime) "
                       "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)"),
            "tpcb": [
                "BEGIN",
                f"UPDATE {t['accounts']} SET abalance = abalance + $1 WHERE aid = $2",
                f"SELECT abalance FROM {t['accounts']} WHERE aid = $1",
                f"UPDATE {t['tellers']} SET tbalance = tbalance + $1 WHERE tid = $2",
                f"UPDATE {t['branches']} SET bbalance = bbalance + $1 WHERE bid = $2",
                (f"INSERT INTO {t['history']} (tid, bid, aid, delta, mtime) "
                 "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)"),
                "COMMIT",
            ],
        }
        self._conns: list = []
        self._stmts: list = []
        self._broken: list[bool] = []
        self._cur: list[str] = []
        self._rnds: list = []
        self._server: dict = {}
        self._server_version = None

    # -- lifecycle ----------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        self._conns = [None] * connections
        self._stmts = [None] * connections
        self._broken = [False] * connections
        self._cur = [next(iter(self.ops))] * connections
        self._rnds = [random.Random(f"aifb-postgres:{self.seed}:{w}") for w in range(connections)]
        results = await asyncio.gather(*(connect(self._ep) for _ in range(connections)),
                                       return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            for r in results:
                if not isinstance(r, BaseException):
                    r.terminate()
            if isinstance(failure, RequestError):
                raise ServiceError(failure.message) from None
            raise failure
        self._conns = list(results)

    async def validate(self) -> None:
        conn = self._conns[0]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                for c in self._conns:
                    if await c.fetchval("SELECT 1") != 1:
                        raise ServiceError(f"postgres at {self.label} answered SELECT 1 wrongly")
                self._server = await server_facts(conn)
                if not self.load_data:
                    await self._check_tables(conn)
        except TimeoutError:
            raise ServiceError(f"postgres at {self.label} did not answer within "
                               f"{CONNECT_TIMEOUT_S:g} s") from None
        except _asyncpg().PostgresError as exc:
            raise ServiceError(f"postgres at {self.label}: {self._ep.scrub(exc)[:200]}") from None
        v = conn.get_server_version()
        self._server_version = f"{v.major}.{v.micro}" if v.major >= 10 else f"{v.major}.{v.minor}.{v.micro}"

    def _needed_tables(self) -> list[str]:
        need = set()
        if {"select", "update", "tpcb"} & set(self.ops):
            need.add("accounts")
        if {"insert", "tpcb"} & set(self.ops):
            need.add("history")
        if "tpcb" in self.ops:
            need |= {"tellers", "branches"}
        return sorted(need)

    async def _check_tables(self, conn) -> None:
        """prepare: false - the tables must already be there and hold the key range."""
        where = f"postgres at {self.label}, database {self._ep.database!r}"
        for name in self._needed_tables():
            table = self.tables[name]
            if await conn.fetchval("SELECT to_regclass($1)::text", table) is None:
                raise ServiceError(
                    f"{where}: table {table!r} does not exist (workload.prepare is false; set "
                    "prepare: true to create and load it, or create it first, e.g. `pgbench -i` "
                    "with table_prefix: pgbench_)")
        checks = [("accounts", "aid", self.accounts), ("tellers", "tid", self.tellers),
                  ("branches", "bid", self.branches)]
        for name, col, want in checks:
            if name not in self._needed_tables():
                continue
            have = await conn.fetchval(f"SELECT max({col}) FROM {self.tables[name]}")
            if have is None or have < want:
                raise ServiceError(
                    f"{where}: table {self.tables[name]!r} holds keys up to {have or 0}, but the "
                    f"workload draws {col} from 1..{want} (scale/table_rows too large for the "
                    "existing tables, or set prepare: true)")

    async def prepare(self) -> None:
        if not self.load_data:
            return
        conn = self._conns[0]
        t = self.tables
        try:
            async with conn.transaction():
                await conn.execute(f"DROP TABLE IF EXISTS {t['history']}, {t['tellers']}, "
                                   f"{t['accounts']}, {t['branches']}")
                await conn.execute(
                    f"CREATE TABLE {t['branches']} (bid int NOT NULL, bbalance int, filler char(88)) "
                    "WITH (fillfactor = 100);"
                    f"CREATE TABLE {t['tellers']} (tid int NOT NULL, bid int, tbalance int, "
                    "filler char(84)) WITH (fillfactor = 100);"
                    f"CREATE TABLE {t['accounts']} (aid int NOT NULL, bid int, abalance int, "
                    "filler char(84)) WITH (fillfactor = 100);"
                    f"CREATE TABLE {t['history']} (tid int, bid int, aid int, delta int, "
                    "mtime timestamp, filler char(22))")
                await conn.copy_records_to_table(
                    t["branches"], columns=("bid", "bbalance"),
                    records=[(b, 0) for b in range(1, self.branches + 1)])
                await conn.copy_records_to_table(
                    t["tellers"], columns=("tid", "bid", "tbalance"),
                    records=[(i, (i - 1) // TELLERS_PER_SCALE + 1, 0)
                             for i in range(1, self.tellers + 1)])
                rng = random.Random(f"aifb-postgres-data:{self.seed}")
                for start in range(1, self.accounts + 1, COPY_BATCH):
                    stop = min(start + COPY_BATCH, self.accounts + 1)
                    rows = [(a, (a - 1) // ACCOUNTS_PER_SCALE + 1, rng.randint(-5000, 5000), "")
                            for a in range(start, stop)]
                    await conn.copy_records_to_table(
                        t["accounts"], columns=("aid", "bid", "abalance", "filler"), records=rows)
                await conn.execute(
                    f"ALTER TABLE {t['branches']} ADD PRIMARY KEY (bid);"
                    f"ALTER TABLE {t['tellers']} ADD PRIMARY KEY (tid);"
                    f"ALTER TABLE {t['accounts']} ADD PRIMARY KEY (aid)")
            for name in ("branches", "tellers", "accounts", "history"):
                await conn.execute(f"VACUUM ANALYZE {t[name]}")
        except _asyncpg().PostgresError as exc:
            raise ServiceError(f"loading the tables into postgres at {self.label} failed: "
                               f"{self._ep.scrub(exc)[:200]}") from None
        except (OSError, _asyncpg().InterfaceError) as exc:
            raise ServiceError(f"loading the tables into postgres at {self.label} failed: "
                               f"{self._ep.scrub(exc)[:200]}") from None

    async def shutdown(self) -> None:
        for c in self._conns:
            drop(c)

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        ep = parse_endpoint(endpoint, secrets)
        try:
            conn = await connect(ep, timeout_s)
        except RequestError as exc:
            raise ServiceError(exc.message) from None
        try:
            async with asyncio.timeout(timeout_s):
                if await conn.fetchval("SELECT 1") != 1:
                    raise ServiceError(f"postgres at {ep.label} answered SELECT 1 wrongly")
        except TimeoutError:
            raise ServiceError(f"postgres at {ep.label} did not answer SELECT 1 within "
                               f"{timeout_s:g} s") from None
        except _asyncpg().PostgresError as exc:
            raise ServiceError(f"postgres at {ep.label}: {ep.scrub(exc)[:160]}") from None
        finally:
            conn.terminate()

    def describe(self) -> dict:
        asyncpg = _asyncpg()
        sql = {k: v for k, v in self.sql.items() if k in self.ops}
        return {
            "kind": "postgres",
            "driver": f"asyncpg {asyncpg.__version__}",
            "protocol": ("extended query protocol; every statement prepared once per connection "
                         "(named prepared statements: Bind/Execute per request, no Parse)"),
            "in_flight_per_connection": 1,
            "endpoint": repr(self._ep),
            "database": self._ep.database,
            "user": self._ep.user,
            "server_version": self._server_version,
            "server_settings": self._server,
            "ops": self.ops,
            "statements": sql,
            "transaction": ("tpcb runs BEGIN ... COMMIT on its connection (server default "
                            "isolation); select/update/insert are single autocommit statements"),
            "tables": self.tables,
            "scale": self.scale_given,
            "rows": {"branches": self.branches, "tellers": self.tellers, "accounts": self.accounts},
            "prepare": self.load_data,
            "load_method": ("DROP + CREATE, COPY (binary), primary keys, VACUUM ANALYZE"
                            if self.load_data else "existing tables (checked, not modified)"),
            "key_distribution": "uniform over 1..accounts (tellers, branches), seeded per worker",
            "bytes": "not counted (rows, not payload): bytes_in/bytes_out are null",
        }

    # -- per request -----------------------------------------------------------------------
    def _op_name(self, worker: int) -> str:
        return self._cur[worker]

    async def _prepare_stmts(self, worker: int) -> _Stmts:
        conn = self._conns[worker]
        s = _Stmts()
        ops = self.ops
        if "select" in ops:
            s.select = await conn.prepare(self.sql["select"])
        if "update" in ops:
            s.update = await conn.prepare(self.sql["update"])
        if "insert" in ops:
            s.insert = await conn.prepare(self.sql["insert"])
        if "tpcb" in ops:
            q = self.sql["tpcb"]
            s.begin = await conn.prepare(q[0])
            s.t_upd_acc = await conn.prepare(q[1])
            s.t_sel_acc = await conn.prepare(q[2])
            s.t_upd_tel = await conn.prepare(q[3])
            s.t_upd_br = await conn.prepare(q[4])
            s.t_ins_hist = await conn.prepare(q[5])
            s.commit = await conn.prepare(q[6])
            s.rollback = await conn.prepare("ROLLBACK")
        self._stmts[worker] = s
        return s

    async def request(self, worker: int):
        rnd = self._rnds[worker]
        op = self._cur[worker] = self._mix.pick(rnd.random())
        if self._broken[worker]:
            raise RequestError("ConnectionError", f"not connected to postgres at {self.label}")
        try:
            st = self._stmts[worker] or await self._prepare_stmts(worker)
            aid = int(rnd.random() * self.accounts) + 1
            if op == "select":
                if await st.select.fetchrow(aid) is None:
                    return (op, False, "NotFound", f"no account with aid {aid}", None, None, None, now_ns())
            elif op == "update":
                await st.update.fetchval(int(rnd.random() * 10001) - 5000, aid)
                if st.update.get_statusmsg() != "UPDATE 1":
                    return (op, False, "NotFound", f"no account with aid {aid}", None, None, None, now_ns())
            elif op == "insert":
                tid = int(rnd.random() * self.tellers) + 1
                bid = int(rnd.random() * self.branches) + 1
                await st.insert.fetchval(tid, bid, aid, int(rnd.random() * 10001) - 5000)
            else:
                tid = int(rnd.random() * self.tellers) + 1
                bid = int(rnd.random() * self.branches) + 1
                delta = int(rnd.random() * 10001) - 5000
                await st.begin.fetchval()
                try:
                    await st.t_upd_acc.fetchval(delta, aid)
                    await st.t_sel_acc.fetchval(aid)
                    await st.t_upd_tel.fetchval(delta, tid)
                    await st.t_upd_br.fetchval(delta, bid)
                    await st.t_ins_hist.fetchval(tid, bid, aid, delta)
                    await st.commit.fetchval()
                except _asyncpg().PostgresError:
                    try:
                        await st.rollback.fetchval()
                    except Exception:
                        self._broken[worker] = True  # state unknown: start afresh
                    raise
            return (op, True, None, None, None, None, None, now_ns())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failure(worker, op, exc)

    def _failure(self, worker: int, op: str, exc: Exception):
        t_end = now_ns()
        asyncpg = _asyncpg()
        conn = self._conns[worker]
        if isinstance(exc, asyncpg.PostgresError) and not isinstance(
                exc, (asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
                      asyncpg.exceptions.PostgresConnectionError)) and \
                conn is not None and not conn.is_closed():
            return (op, False, type(exc).__name__, self._ep.scrub(exc)[:200],
                    None, None, None, t_end)
        # The connection is gone (server stopped, socket closed, protocol state unknown).
        self._broken[worker] = True
        msg = self._ep.scrub(exc) or type(exc).__name__
        return (op, False, "ConnectionError", f"postgres at {self.label}: {msg}"[:200],
                None, None, None, t_end)

    def abort(self, worker: int) -> str | None:
        op = super().abort(worker)
        # A cancelled statement leaves the protocol state unknown: drop the connection.
        self._broken[worker] = True
        drop(self._conns[worker])
        return op

    def connected(self, worker: int) -> bool:
        conn = self._conns[worker]
        return not self._broken[worker] and conn is not None and not conn.is_closed()

    async def reconnect(self, worker: int) -> None:
        drop(self._conns[worker])
        self._stmts[worker] = None
        conn = await connect(self._ep)
        self._conns[worker] = conn
        self._broken[worker] = False
        try:
            await self._prepare_stmts(worker)
        except Exception as exc:
            self._broken[worker] = True
            raise RequestError("ConnectionError",
                               f"postgres at {self.label}: preparing statements failed: "
                               f"{self._ep.scrub(exc)[:150]}") from None
