"""Before the load: the run's identity for its clients, creating, starting and validating a
block of clients (each seeded by its global index), and the one-off preload on client 0.
Used alike by the single-process engine (aifb.load.engine) and each worker process
(aifb.load.worker)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable

from aifb.clients import get_client
from aifb.clients.base import new_salt
from aifb.clock import now_ns
from aifb.load.figures import G
from aifb.load.limits import connections_needed, note_connections, raise_nofile_limit
from aifb.load.settings import LoadRun


def client_seed(seed: int, client: int) -> int:
    """Each logical client's seed, derived from the recipe's seed and its index."""
    return int.from_bytes(hashlib.sha256(f"aifb:{seed}:{client}".encode()).digest()[:6], "big")


def run_identity(identity: dict | None) -> dict:
    """What a client may stamp on its requests: {"benchmark_id", "salt", "client_offset"}.
    benchmark_id names the run in request ids (X-Request-Id); salt is one random value per run
    (LLM cache: cold prefixes every prompt with it), the same in every process and client job;
    client_offset: this job's first global client index. Missing fields get defaults here."""
    out = dict(identity or {})
    out.setdefault("benchmark_id", "aifb")
    if not out.get("salt"):
        out["salt"] = new_salt()
    out.setdefault("client_offset", 0)
    return out


async def start_clients(run: LoadRun, ids: Iterable[int], started: list) -> list:
    """Clients `ids` (each seeded by its index), `concurrency` connections each, validated.
    `started` collects every client whose startup began: the caller shuts those down, whatever
    happens. Clients with an `identify(benchmark_id, client, salt)` method get the run's
    identity (run_identity) before startup."""
    cls = get_client(run.kind)
    load = run.load
    ids = list(ids)
    raise_nofile_limit(connections_needed(load, len(ids)))
    note_connections(len(ids) * load.concurrency, run.log)
    clients = [cls(run.endpoint, run.workload, client_seed(run.seed, ci), run.secrets)
               for ci in ids]
    ident = run_identity(run.identity)
    total = ident.get("clients_total") or load.clients
    for ci, c in zip(ids, clients):
        identify = getattr(c, "identify", None)
        if identify is not None:
            identify(ident["benchmark_id"], ident["client_offset"] + ci, ident["salt"],
                     clients=total)
    for c in clients:
        started.append(c)
        await c.startup(load.concurrency)
    for c in clients:
        await c.validate()
    return clients


async def prepare(client) -> dict:
    """The one-off preload (client 0 only), outside any measured window."""
    t_prep = now_ns()
    await client.prepare()
    return {"client": client.describe(), "prepare_s": round((now_ns() - t_prep) / G, 6)}


async def announce_ready(run: LoadRun, info: dict) -> None:
    """The run's on_ready(info), sync or async, just before the load starts."""
    if run.on_ready is not None:
        r = run.on_ready(info)
        if inspect.isawaitable(r):
            await r


def finish(stats: dict, info: dict, log, where: str = "") -> dict:
    """load_stats with the client's description and preload time, and the closing log line."""
    stats["client"] = info["client"]
    stats["prepare_s"] = info["prepare_s"]
    log(f"load done ({stats['stopped_by']}): {stats['records_written']} records, "
        f"{stats['measured']['ok']} ok / {stats['measured']['errors']} errors in the "
        f"{stats['window_s']:.3f} s window{where}")
    return stats


async def shut_down(started: list) -> None:
    """Shut down every client whose startup began (errors ignored: the run's own error wins)."""
    for c in started:
        try:
            await c.shutdown()
        except Exception:
            pass
