"""PostgreSQL as a throwaway local cluster: initdb, then `postgres` on 127.0.0.1 and a free port.

deploy():
  1. initdb --no-sync -D <workdir>/data -U <user> -E UTF8 --locale=C, with password auth
     (scram-sha-256, the password from service.password_env / password_file - or, when the
     recipe names none, a random one generated for the run (aifb.credentials.with_run_password)
     - passed through a private temporary --pwfile that is deleted right after). Never trust:
     any local user could otherwise run `COPY ... TO PROGRAM` as the cluster's OS user.
     --no-sync only skips initdb's own fsync of the fresh files; the server's durability
     settings are separate (below).
  2. postgres -D <data> -p PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=
     (TCP on loopback only, no Unix socket) plus the settings: durable defaults (fsync,
     synchronous_commit and full_page_writes on, as PostgreSQL ships), max_connections 200,
     overridable with `service.settings: {name: value}`; `service.args` are appended as given.
  3. ready when a real `SELECT 1` answers (the client's probe), then CREATE DATABASE
     <service.database> (default `aifb`) and read the effective settings back from pg_settings
     into run.json.

As root (containers, CI) the cluster runs as `service.run_as` (default `postgres`; PostgreSQL
refuses to run as root) through `setpriv --reuid/--regid --init-groups --pdeathsig INT`, so
the server stays the direct child and gets a fast shutdown if the harness dies. When that user
cannot reach <workdir> (e.g. a 0700 parent such as pytest's tmp dirs), the data directory goes
to a private scratch directory under $TMPDIR (chowned to that user) with a `data` symlink in
<workdir>, and that scratch directory is removed at teardown. Otherwise teardown only stops
the server (SIGINT = fast shutdown, then SIGTERM/SIGKILL of the process group) and removes
nothing: the data directory stays under results/<id>/service.

On clusters the same kind is meant to run from the `postgres` image (`service.image:
postgres:15`); locally `service.image` is only recorded.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from secrets import token_urlsafe
from pathlib import Path
from urllib.parse import quote

from aifb import endpoints, process
from aifb.credentials import RUN_PASSWORD_ENV, load_secrets
from aifb.errors import ServiceError
from aifb.units import parse_duration
from aifb.clients.base import RequestError
from aifb.clients.postgres import PostgresClient, connect, parse_endpoint, server_facts
from aifb.services import register
from aifb.services.base import LocalProcessService, run_version, telemetry_credentials

DEFAULT_SETTINGS = {
    # PostgreSQL's own durable defaults, stated so that run.json says what was measured.
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "200",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SETTING = re.compile(r"^[a-z_][a-z0-9_.]*$")
PG_LIB_GLOB = "/usr/lib/postgresql/*/bin"
# Backends flush their statistics at most once a second (PGSTAT_MIN_INTERVAL, 1000 ms,
# PostgreSQL 15), so pg_stat_database lags the transactions by up to that much: the telemetry's
# requests ratio widens its tolerance by it.
PG_STATS_LAG_S = 1.0


def _pg_version_key(path: str) -> tuple:
    m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/", path)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@register("postgres")
class PostgresService(LocalProcessService):
    binary_name = "postgres"
    probe_timeout_s = 2.0
    probe_min_timeout_s = 0.1
    readiness_probe = "SELECT 1"
    install_hint = ("install PostgreSQL with `apt-get install postgresql-15` (Debian/Ubuntu, as "
                    "root; the server binaries are in /usr/lib/postgresql/15/bin) or `conda "
                    "install -c conda-forge postgresql`.")

    def __init__(self, spec: dict, workdir: Path, log_path: Path):
        super().__init__(spec, workdir, log_path)
        self.user = str(spec.get("user") or "postgres")
        self.database = str(spec.get("database") or "aifb")
        for field, value in (("user", self.user), ("database", self.database)):
            if not _NAME.match(value):
                raise ServiceError(f"service.{field} {value!r} must be a plain SQL name (letters, "
                                   "digits, _; not starting with a digit)")
        # the runner always names one (with_run_password); used on its own, a random one
        self._password = load_secrets(spec).get("password") or token_urlsafe(24)
        self.settings = self._settings(spec.get("settings"))
        self._run_as = None
        self._scratch: Path | None = None
        self._data_link: Path | None = None
        self.data_dir: Path | None = None
        self.info.image = spec.get("image")

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """pg_stat_database, pg_stat_activity, pg_stat_bgwriter (and pg_stat_io where present);
        committed and rolled-back transactions are the server's count of requests."""
        return [{"type": "postgres", "name": "postgres", "endpoint": endpoint,
                 "secrets": telemetry_credentials(secrets),
                 "figures": {"requests": {
                     "metrics": ["database_xact_commit", "database_xact_rollback"],
                     "less_own_samples": 1, "lag_s": PG_STATS_LAG_S, "client": "requests",
                     "basis": "pg_stat_database xact_commit + xact_rollback (less the sampler's "
                              "one transaction per sample) vs client requests"},
                     "queue": ["backends"]}}]

    # -- configuration -----------------------------------------------------------------
    @staticmethod
    def _settings(extra) -> dict:
        settings = dict(DEFAULT_SETTINGS)
        if extra is None:
            return settings
        if not isinstance(extra, dict):
            raise ServiceError("service.settings must be a mapping of PostgreSQL settings, e.g. "
                               "{shared_buffers: 1GB, fsync: off}")
        for key, value in extra.items():
            if not isinstance(key, str) or not _SETTING.match(key):
                raise ServiceError(f"service.settings: {key!r} is not a PostgreSQL setting name")
            if key in ("listen_addresses", "port", "unix_socket_directories", "data_directory"):
                raise ServiceError(f"service.settings.{key} is set by aifb (use service.host / "
                                   "service.port)")
            if isinstance(value, bool):
                value = "on" if value else "off"
            if not isinstance(value, (str, int, float)):
                raise ServiceError(f"service.settings.{key}: {value!r} is not a scalar value")
            settings[key] = str(value)
        return settings

    def resolve_binary(self) -> str:
        wanted = self.spec.get("binary")
        if wanted and wanted != "postgres":  # the plain name: searched as by default
            found = shutil.which(wanted)
            if not found:
                raise ServiceError(f"{wanted} not found: {self.install_hint} Or set service.binary "
                                   "to the path of `postgres`, or point service.endpoint at a "
                                   "running PostgreSQL.")
            return found
        found = shutil.which("postgres")
        if found:
            return found
        for d in sorted(glob.glob(PG_LIB_GLOB), key=_pg_version_key, reverse=True):
            if os.access(os.path.join(d, "postgres"), os.X_OK):
                return os.path.join(d, "postgres")
        raise ServiceError(f"the PostgreSQL server (postgres) was not found on PATH or in "
                           f"{PG_LIB_GLOB}: {self.install_hint} Or set service.binary, or point "
                           "service.endpoint at a running PostgreSQL.")

    @staticmethod
    def tool(binary: str, name: str) -> str:
        """initdb (or another server tool) next to the postgres binary, else on PATH."""
        beside = Path(binary).resolve().parent / name
        if os.access(beside, os.X_OK):
            return str(beside)
        found = shutil.which(name)
        if found:
            return found
        raise ServiceError(f"{name} was not found next to {binary} or on PATH (it ships with the "
                           "PostgreSQL server package, e.g. apt-get install postgresql-15)")

    def version(self, binary: str) -> str | None:
        return run_version([binary, "--version"], r"\(PostgreSQL\)\s+(\S+)")

    def endpoint_for(self, host: str, port: int, database: str | None = None) -> str:
        return (f"postgresql://{quote(self.user, safe='')}@{host}:{port}/"
                f"{quote(database or self.database, safe='')}")

    def _as_user(self, pdeathsig: bool = True) -> list[str]:
        if self._run_as is None:
            return []
        setpriv = shutil.which("setpriv")
        if not setpriv:
            raise ServiceError("running as root, PostgreSQL must be started as another user, which "
                               "needs `setpriv` (util-linux) on PATH")
        uid, gid = self._run_as[1], self._run_as[2]
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--init-groups",
                *(["--pdeathsig", "INT"] if pdeathsig else []), "--"]

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        argv = [*self._as_user(), binary, "-D", str(self.data_dir), "-p", str(port),
                "-c", f"listen_addresses={host}", "-c", "unix_socket_directories="]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv + [str(a) for a in self.spec.get("args", [])]

    needs_password = True  # aifb.credentials.with_run_password

    def auth(self) -> str:
        env = self.spec.get("password_env")
        source = ("a random password generated for this run" if env in (None, RUN_PASSWORD_ENV)
                  and not self.spec.get("password_file") else "the password from the environment / a file")
        return f"scram-sha-256 with {source}"

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await PostgresClient.probe(endpoint, timeout_s, {"password": self._password})

    # -- helpers -------------------------------------------------------------------------
    def _resolve_run_as(self) -> None:
        if os.geteuid() != 0:
            self._run_as = None
            return
        name = str(self.spec.get("run_as") or "postgres")
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise ServiceError(f"running as root, PostgreSQL must run as another user, and user "
                               f"{name!r} does not exist (install the postgresql package, which "
                               "creates `postgres`, or set service.run_as)") from None
        if pw.pw_uid == 0:
            raise ServiceError("service.run_as must not be root: PostgreSQL refuses to run as root")
        self._run_as = (name, pw.pw_uid, pw.pw_gid)

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as[1], self._run_as[2])

    def _reachable(self, path: Path) -> bool:
        if self._run_as is None:
            return True
        r = subprocess.run([*self._as_user(pdeathsig=False), "test", "-x", str(path)],
                           capture_output=True, timeout=30)
        return r.returncode == 0

    def _choose_data_dir(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self.workdir / "data"
        if link.exists() or link.is_symlink():  # an earlier attempt's cluster: keep it aside
            n = 1
            while (self.workdir / f"data.previous-{n}").exists():
                n += 1
            link.rename(self.workdir / f"data.previous-{n}")
        if self._reachable(self.workdir):
            data = link
            data.mkdir(mode=0o700)
        else:
            self._scratch = Path(tempfile.mkdtemp(prefix="aifb-postgres-"))
            self._chown(self._scratch)
            data = self._scratch / "data"
            data.mkdir(mode=0o700)
            link.symlink_to(data)
            self._data_link = link
            self.info.extra["data_dir_note"] = (
                f"user {self._run_as[0]!r} cannot reach {self.workdir} (a parent directory is "
                "private), so the cluster lived in a scratch directory that teardown removes")
        self._chown(data)
        return data

    def tool_argv(self, binary: str, name: str, args: list[str]) -> list[str]:
        """The command line of a server tool (initdb) run the way the server is run: a
        container launcher (e.g. aifb.slurm.service_job's Apptainer wrapper) overrides this with argv."""
        return [*self._as_user(pdeathsig=False), self.tool(binary, name), *args]

    async def _initdb(self, binary: str) -> list[str]:
        args = ["--no-sync", "-D", str(self.data_dir), "-U", self.user, "-E", "UTF8", "--locale=C"]
        pwdir = None
        try:
            pwdir = Path(tempfile.mkdtemp(prefix="aifb-pgpw-"))
            self._chown(pwdir)
            pwfile = pwdir / "pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self._password + "\n")
            self._chown(pwfile)
            args += ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
            argv = self.tool_argv(binary, "initdb", args)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(argv)}\n".encode())
                log.flush()
                try:
                    proc = await asyncio.to_thread(
                        subprocess.run, argv, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, timeout=300, env=process.server_env())
                except subprocess.TimeoutExpired:
                    raise ServiceError(f"initdb did not finish within 300 s (log: {self.log_path})",
                                       log_tail=process.log_tail(self.log_path)) from None
                except OSError as exc:
                    raise ServiceError(f"cannot run {argv[0]}: {exc.strerror}") from None
        finally:
            if pwdir is not None:
                shutil.rmtree(pwdir, ignore_errors=True)
        if proc.returncode != 0:
            raise ServiceError(f"initdb failed with exit code {proc.returncode} (log: "
                               f"{self.log_path})", log_tail=process.log_tail(self.log_path))
        return argv

    def _allow_remote(self, host: str) -> None:
        """initdb's pg_hba.conf admits loopback only. Bound to another address (a cluster
        node), clients elsewhere must get in too - with a password, never by trust."""
        if endpoints.is_loopback(host):
            return
        with open(self.data_dir / "pg_hba.conf", "a", encoding="utf-8") as fh:
            fh.write("# aifb: clients on other nodes, password required\n"
                     "host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
        self.info.extra["pg_hba"] = "loopback + any address with scram-sha-256"

    async def _create_database(self, admin_endpoint: str) -> dict:

        ep = parse_endpoint(admin_endpoint, {"password": self._password})
        try:
            conn = await connect(ep)
        except RequestError as exc:
            raise ServiceError(exc.message) from None
        try:
            if self.database != "postgres" and not await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", self.database):
                await conn.execute(f"CREATE DATABASE {_sql_ident(self.database)}")
            return await server_facts(conn)
        except Exception as exc:
            raise ServiceError(f"postgres at {ep.label}: creating database {self.database!r} "
                               f"failed: {' '.join(str(exc).split())[:200]}") from None
        finally:
            conn.terminate()

    # -- lifecycle -------------------------------------------------------------------------
    async def deploy(self) -> str:
        binary = self.resolve_binary()
        host = self.spec.get("host", "127.0.0.1")
        port = self.spec.get("port")
        if port is not None and process.port_in_use(host, port):
            raise ServiceError(f"port {port} on {host} is in use: cannot deploy postgres there "
                               "(choose another service.port, or omit it to use a free one)")
        self.check_bind(host)
        port = port or process.free_port(host)
        self._resolve_run_as()
        self.info.binary, self.info.host, self.info.port = os.path.realpath(binary), host, port
        self.info.version = self.version(binary)
        self.info.started_at = process.wall_iso()
        t0 = time.monotonic()
        self.data_dir = self._choose_data_dir()
        initdb_argv = await self._initdb(binary)
        self._allow_remote(host)
        argv = self.argv(binary, host, port, self.workdir)
        self.info.command = argv
        self.info.endpoint = self.endpoint_for(host, port)
        self.info.extra.update({
            "initdb": initdb_argv,
            "data_dir": str(self.data_dir),
            "user": self.user,
            "database": self.database,
            "auth": self.auth(),
            "run_as": self._run_as[0] if self._run_as else None,
            "unix_socket": f"disabled (unix_socket_directories is empty): TCP on {host} only",
            "settings": dict(self.settings),
            "args": [str(a) for a in self.spec.get("args", [])],
        })
        self.proc = process.spawn(argv, self.log_path, cwd=self.workdir,
                                 env=process.server_env(keep=self.keep_env))
        self.info.pid = self.proc.pid
        timeout = parse_duration(self.spec.get("ready_timeout", "60s"))
        await self._wait_ready(timeout, self.endpoint_for(host, port, "postgres"))
        self.info.extra["server_settings"] = await self._create_database(
            self.endpoint_for(host, port, "postgres"))
        await self._wait_ready(10, self.info.endpoint)
        self.info.ready_s = round(time.monotonic() - t0, 6)
        self.info.ready_at = process.wall_iso()
        return self.info.endpoint

    async def teardown(self) -> None:
        try:
            if self.proc is not None and not self.info.stopped_at:
                died_before = self.proc.poll() is not None
                if not died_before:
                    try:
                        os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown: abort sessions, checkpoint
                    except ProcessLookupError:
                        pass
                    try:
                        await asyncio.to_thread(self.proc.wait, 20)
                    except subprocess.TimeoutExpired:
                        pass
                self.info.exit_code = await asyncio.to_thread(process.stop, self.proc)
                self.info.stopped_at = process.wall_iso()
                if died_before:
                    self.info.extra["died_before_teardown"] = True
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                if self._data_link is not None and self._data_link.is_symlink():
                    self._data_link.unlink()
                self.info.extra["scratch_data_dir_removed"] = str(self._scratch)
                self._scratch = None
