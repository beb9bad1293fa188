"""PostgreSQL: one connection per worker, named prepared statements, callback driven.

The requests go over aifb.clients.pgwire, a small implementation of the protocol on
asyncio.Protocol: every statement of the hot path is prepared once per connection (Parse, sent
with the connection's first request), then a request is one write of Bind/Execute/Sync and its
reply is parsed in data_received - no coroutine, task or future per request, so the client's
own cost stays below the server's (asyncpg's awaited fetchrow cost ~72 µs of client CPU per
point SELECT at one connection on these machines, this 31-33 µs; benchmarks/README.md,
"PostgreSQL client", has the figures and the commands). The server's parser and planner are out of the
measurement, as with `pgbench -M prepared`. asyncpg does the rest, off the hot path: the
probe, the checks of existing tables, the server's settings, loading the tables with COPY.

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
from aifb.clients.base import OpMix, RequestError
from aifb.clients.pgwire import PgError, Statement, open_connection, query_message

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
    # asyncpg's exception classes and PgError's names for them are the same names
    server_error = isinstance(exc, (asyncpg.PostgresError, PgError))
    name = exc.name if isinstance(exc, PgError) else type(exc).__name__
    no_password = (name == "InvalidPasswordError" and not ep.password) or (
        isinstance(exc, RequestError) and exc.type == "NoPassword")
    if no_password:
        return RequestError("AuthError", f"{where} asks for a password for user {ep.user!r} and "
                            "none was given (set service.password_env or password_file)")
    if name == "InvalidPasswordError":
        return RequestError("AuthError", f"{where} rejected the password for user {ep.user!r} "
                            "(password authentication failed): check service.password_env / "
                            "password_file")
    if name == "InvalidAuthorizationSpecificationError":
        return RequestError("AuthError", f"{where} refused user {ep.user!r}: "
                            f"{ep.scrub(exc)[:160]}")
    if name == "InvalidCatalogNameError":
        return RequestError("NoSuchDatabase", f"{where}: database {ep.database!r} does not exist")
    if name == "TooManyConnectionsError":
        return RequestError("TooManyConnections",
                            f"{where} refused a connection: too many clients ("
                            f"{ep.scrub(exc)[:100]}); lower load.clients x "
                            "load.concurrency or raise the server's max_connections")
    if name == "CannotConnectNowError":
        return RequestError("NotReady", f"{where} is not accepting connections yet: "
                            f"{ep.scrub(exc)[:120]}")
    if server_error:
        return RequestError(name, f"{where}: {ep.scrub(exc)[:160]}")
    if isinstance(exc, RequestError):
        return RequestError(exc.type, f"{where}: {ep.scrub(exc.message)[:160]}")
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


async def open_wire(ep: Endpoint, timeout_s: float = CONNECT_TIMEOUT_S):
    """One aifb.clients.pgwire connection (the requests' path); RequestError on failure."""
    try:
        return await open_connection(ep.host, ep.port, ep.user, ep.database, ep.password,
                                     timeout_s, ep.label)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a clear message
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


class _Work:
    """One worker's request in flight: its op, the engine's callback and, for tpcb, the
    statements still to run. One per worker, reused: a request allocates only its message
    bytes and its result tuple."""

    __slots__ = ("client", "worker", "op", "aid", "done", "steps", "error", "reply")

    def __init__(self, client: "PostgresClient", worker: int):
        self.client = client
        self.worker = worker
        self.op = "?"
        self.aid = 0
        self.done = None
        self.steps: list | None = None     # tpcb: the statements still to send, last first
        self.error: PgError | None = None  # tpcb: the failed statement's error, being rolled back
        self.reply = self.on_reply

    def on_reply(self, rows: int, tag: bytes, error: PgError | None, t_end: int) -> None:
        """The connection's callback: the statement's reply is complete (or the connection lost:
        no error and no tag)."""
        c = self.client
        conn = c.conn(self.worker)
        op = self.op
        if error is None and tag:                      # the statement went through
            c.prepared[self.worker] = True
            if self.error is not None:                 # the ROLLBACK after a failed tpcb statement
                res = (op, False, self.error.name, c.scrub(self.error), None, None, None, t_end)
            elif self.steps:                           # tpcb: the next statement
                if conn.send(self.steps.pop(), self.reply):
                    return
                res = (op, False, "ConnectionError", c.scrub(conn.reason), None, None, None, t_end)
            elif op == "select" and rows == 0:
                res = (op, False, "NotFound", f"no account with aid {self.aid}", None, None, None, t_end)
            elif op == "update" and tag != b"UPDATE 1":
                res = (op, False, "NotFound", f"no account with aid {self.aid}", None, None, None, t_end)
            else:
                res = (op, True, None, None, None, None, None, t_end)
        elif error is not None:
            fatal = error.fields.get("S") in ("FATAL", "PANIC")
            if (self.steps is not None and self.error is None and conn.status == b"E"
                    and not fatal and c.prepared[self.worker]):
                self.error = error                     # roll the failed transaction back first
                self.steps = None
                if conn.send(c.rollback_message, self.reply):
                    return
            elif fatal or self.error is not None or not c.prepared[self.worker]:
                # the session ends, the rollback failed, or the first request's statements
                # are in an unknown state: start afresh (the engine reconnects)
                conn.close()
            first = self.error or error
            res = (op, False, first.name, c.scrub(first), None, None, None, t_end)
        else:                                          # the connection is gone
            res = (op, False, "ConnectionError", c.scrub(conn.reason or "connection lost"),
                   None, None, None, t_end)
        done = self.done
        self.done = None
        if done is not None:
            done(res)


@register("postgres")
class PostgresClient:
    """`connections` protocol connections (aifb.clients.pgwire), one per worker, one statement
    in flight on each."""

    kind = "postgres"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        self.endpoint = endpoint
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
        # The statements the op mix needs, prepared on each connection with its first request.
        st = self._st = {}
        for op in self.ops:
            if op == "tpcb":
                for i, q in enumerate(self.sql["tpcb"]):
                    st[f"tpcb{i}"] = Statement(f"aifb_tpcb{i}", q, q.count("$"))
                st["rollback"] = Statement("aifb_rollback", "ROLLBACK", 0)
            else:
                st[op] = Statement(f"aifb_{op}", self.sql[op], self.sql[op].count("$"))
        self._parse_all = b"".join(s.parse() for s in st.values())
        self.rollback_message = st["rollback"].bind() if "rollback" in st else b""
        self._conns: list = []
        self.prepared: list[bool] = []
        self._work: list[_Work] = []
        self._rnds: list = []
        self._server: dict = {}
        self._server_version = None
        self._loop = None

    # -- lifecycle ----------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._conns = [None] * connections
        self.prepared = [False] * connections
        self._work = [_Work(self, w) for w in range(connections)]
        self._rnds = [random.Random(f"aifb-postgres:{self.seed}:{w}").random
                      for w in range(connections)]
        results = await asyncio.gather(*(open_wire(self._ep) for _ in range(connections)),
                                       return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            for r in results:
                if not isinstance(r, BaseException):
                    r.close()
            if isinstance(failure, RequestError):
                raise ServiceError(failure.message) from None
            raise failure
        self._conns = list(results)

    async def _admin(self):
        """An asyncpg connection for set-up (checks, settings, COPY); ServiceError on failure."""
        try:
            return await connect(self._ep)
        except RequestError as exc:
            raise ServiceError(exc.message) from None

    async def validate(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                for c in self._conns:
                    if (await c.call(query_message("SELECT 1")))[0] != 1:
                        raise ServiceError(f"postgres at {self.label} answered SELECT 1 wrongly")
                admin = await self._admin()
                try:
                    self._server = await server_facts(admin)
                    if not self.load_data:
                        await self._check_tables(admin)
                finally:
                    drop(admin)
        except TimeoutError:
            raise ServiceError(f"postgres at {self.label} did not answer within "
                               f"{CONNECT_TIMEOUT_S:g} s") from None
        except (PgError, _asyncpg().PostgresError) as exc:
            raise ServiceError(f"postgres at {self.label}: {self._ep.scrub(exc)[:200]}") from None
        except RequestError as exc:
            raise ServiceError(f"postgres at {self.label}: {self._ep.scrub(exc.message)[:200]}") from None
        # "15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        self._server_version = (self._conns[0].params.get("server_version") or "?").split()[0]

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
        conn = await self._admin()
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
        except (_asyncpg().PostgresError, OSError, _asyncpg().InterfaceError) as exc:
            raise ServiceError(f"loading the tables into postgres at {self.label} failed: "
                               f"{self._ep.scrub(exc)[:200]}") from None
        finally:
            drop(conn)

    async def shutdown(self) -> None:
        for c in self._conns:
            if c is not None:
                c.close()

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
            "driver": (f"aifb.clients.pgwire (protocol 3.0) for the requests; asyncpg "
                       f"{asyncpg.__version__} for set-up (probe, checks, COPY)"),
            "protocol": ("extended query protocol; every statement prepared once per connection "
                         "(named prepared statements, Parse with the connection's first request), "
                         "then one write of Bind/Execute/Sync per statement; int4 parameters in "
                         "binary, results in text"),
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
    def conn(self, worker: int):
        return self._conns[worker]

    def scrub(self, text) -> str:
        return self._ep.scrub(text)[:200]

    def start(self, worker: int, done) -> int | None:
        rnd = self._rnds[worker]
        w = self._work[worker]
        op = w.op = self._mix.pick(rnd())
        st = self._st
        aid = w.aid = int(rnd() * self.accounts) + 1
        w.steps = None
        if op == "select":
            msg = st["select"].bind(aid)
        elif op == "update":
            msg = st["update"].bind(int(rnd() * 10001) - 5000, aid)
        elif op == "insert":
            tid = int(rnd() * self.tellers) + 1
            bid = int(rnd() * self.branches) + 1
            msg = st["insert"].bind(tid, bid, aid, int(rnd() * 10001) - 5000)
        else:
            tid = int(rnd() * self.tellers) + 1
            bid = int(rnd() * self.branches) + 1
            delta = int(rnd() * 10001) - 5000
            msg = st["tpcb0"].bind()
            w.steps = [st["tpcb6"].bind(), st["tpcb5"].bind(tid, bid, aid, delta),
                       st["tpcb4"].bind(delta, bid), st["tpcb3"].bind(delta, tid),
                       st["tpcb2"].bind(aid), st["tpcb1"].bind(delta, aid)]  # popped from the end
        if not self.prepared[worker]:
            msg = self._parse_all + msg
        w.done = done
        w.error = None
        conn = self._conns[worker]
        t_start = now_ns()
        if conn is None or not conn.send(msg, w.reply):
            w.done = None
            reason = (conn.reason if conn is not None else None) or f"not connected to postgres at {self.label}"
            self._loop.call_soon(done, (op, False, "ConnectionError", self.scrub(reason), None, None,
                                        None, now_ns()))
            return None
        return t_start

    def abort(self, worker: int) -> str | None:
        w = self._work[worker]
        op = w.op if w.done is not None else None
        w.done = None
        conn = self._conns[worker]
        if conn is not None:
            # a statement cut off leaves the protocol state unknown: drop the connection
            conn.reason = f"connection to postgres at {self.label} dropped after a timed-out request"
            conn.close()
        return op

    def connected(self, worker: int) -> bool:
        conn = self._conns[worker]
        return conn is not None and not conn.broken

    async def reconnect(self, worker: int) -> None:
        old = self._conns[worker]
        if old is not None:
            old.close()
        self._conns[worker] = None
        self.prepared[worker] = False      # the new session prepares with its first request
        self._conns[worker] = await open_wire(self._ep)
