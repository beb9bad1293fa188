"""The service side of a Slurm service job: `python -m aifb.slurm.service_job RUN_DIR`.

Submitted by aifb.slurm.service_launcher.SlurmServiceLauncher. Reads RUN_DIR/service-job.json, starts
the service on this node with the kind's LocalProcessService logic (a binary from PATH or a
module, or the kind's command inside an Apptainer image), bound to this node's address (the
target's `bind`), runs the kind's real readiness probe, and writes RUN_DIR/service.json:

    {"status": "ready", "job_id", "node", "service": {host, port, pid, version, endpoint, ...}}

With server telemetry on (the recipe's `telemetry`), it also listens for the benchmark job's
clock sync and runs the telemetry sampler beside the service (aifb.slurm.service_telemetry).
Then it stays until it is told to stop - scancel (SIGTERM), the time limit, or its owner (the
benchmark job or process) being gone - stops the service (SIGTERM, grace, SIGKILL of its
process group) and writes service.json again with status "stopped" (or "exited" when the
service died by itself, "failed" when it never became ready).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path

from aifb import process
from aifb.errors import AifbError, ServiceError
from aifb.jsonio import read_json, write_json
from aifb.services import get_service
from aifb.slurm.commands import owner_alive
from aifb.slurm.service_telemetry import TelemetryResponder

OWNER_CHECK_S = float(os.environ.get("AIFB_OWNER_CHECK_S", "30"))  # how often the owner is checked


def node_address(bind: str | None) -> str:
    """The address to bind on this node: a literal, `interface:NAME`, or `auto` (what this
    node's hostname resolves to, else the address of the interface of the default route)."""
    bind = bind or "auto"
    if bind.startswith("interface:"):
        name = bind.split(":", 1)[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name[:15].encode()))
            except OSError as exc:
                raise ServiceError(f"bind {bind}: no IPv4 address on interface {name} of "
                                   f"{socket.gethostname()} ({exc.strerror})") from None
        return socket.inet_ntoa(packed[20:24])
    if bind != "auto":
        return bind
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if not addr.startswith("127."):
            return addr
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def apptainerized(base: type, app: dict, image: str) -> type:
    """`base` (a LocalProcessService kind) with its command run inside an Apptainer image:
    exec mode runs the kind's binary in the image, run mode the image's entry point with the
    kind's arguments (argv[1:]); --nv for GPU images; the service's workdir is bound."""

    class Apptainer(base):
        def resolve_binary(self) -> str:
            if shutil.which("apptainer") is None:
                raise ServiceError(
                    f"apptainer not found on PATH on {socket.gethostname()}: load its module "
                    "(slurm.modules in config/targets.yaml)")
            return app.get("binary") or self.binary_name

        def argv(self, binary, host, port, workdir):
            inner = super().argv(binary, host, port, workdir)
            mode = app.get("mode", "exec")
            cmd = ["apptainer", mode]
            if app.get("nv"):
                cmd.append("--nv")
            cmd += ["--bind", str(workdir)]
            for b in app.get("binds") or []:
                cmd += ["--bind", os.path.expandvars(b)]
            cmd += list(app.get("args") or [])
            cmd.append(image)
            return cmd + (inner if mode == "exec" else inner[1:])

        def version(self, binary):
            return None  # the image reference (and digest, when pinned) identifies it

    Apptainer.__name__ = f"Apptainer{base.__name__}"
    Apptainer.kind = base.kind
    return Apptainer


def _normalise_image(image: str) -> str:
    if "://" in image or image.endswith(".sif") or image.startswith(("/", ".")):
        return os.path.expandvars(image)
    return f"docker://{image}"


def make_service(req: dict, host: str, workdir: Path, log_path: Path):
    kind = req["kind"]
    spec = dict(req["spec"], host=host)
    cls = get_service(kind)
    app = (req.get("how") or {}).get("apptainer")
    image = req.get("image")
    if app or (image and not spec.get("binary") and not (req.get("how") or {}).get("binary")
               and not (req.get("how") or {}).get("module")):
        app = dict(app or {})
        cls = apptainerized(cls, app, _normalise_image(image or app["image"]))
    service = cls(spec, workdir, log_path)
    # the target's env: exported by the batch script, meant for the server
    service.keep_env = set(((req.get("how") or {}).get("env") or {}))
    return service


async def serve(run_dir: Path, log) -> int:
    req = read_json(run_dir / "service-job.json")
    out = run_dir / "service.json"
    job_id = os.environ.get("SLURM_JOB_ID")
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    base = {"benchmark_id": req["benchmark_id"], "job_id": job_id, "node": node,
            "hostname": socket.gethostname(), "pid": os.getpid(), "owner": req.get("owner"),
            "job_started_at": process.wall_iso(), "job_started_unix": time.time()}
    scratch = req.get("scratch_dir")
    if scratch:
        workdir = Path(os.path.expandvars(scratch)) / f"aifb-{req['benchmark_id']}-{job_id or os.getpid()}"
    else:
        workdir = run_dir / "service"
    base["workdir"] = str(workdir)
    service = telemetry = None
    status, reason, code = "failed", None, 1
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stop_reason = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        def on_signal(sig=sig):
            stop_reason.setdefault("why", signal.Signals(sig).name)
            task.cancel()
        loop.add_signal_handler(sig, on_signal)
    try:
        try:
            host = node_address(req.get("bind"))
            service = make_service(req, host, workdir, run_dir / "service.log")
            log(f"starting {req['kind']} on {node} ({host})")
            endpoint = await service.deploy()
        except AifbError as exc:
            reason = str(exc)
            write_json(out, base | {"status": "failed", "reason": reason,
                                    "log_tail": getattr(exc, "log_tail", None),
                                    "service": service.describe() if service else None})
            log(f"FAILED: {reason}")
            return 1
        if req.get("telemetry"):   # the sampler beside the service, started by the benchmark job
            try:
                telemetry = TelemetryResponder(run_dir, req, service, log)
                base["telemetry"] = await telemetry.start(host)
            except (OSError, ValueError) as exc:   # never a reason to fail the service
                telemetry = None
                log(f"telemetry: cannot listen for the benchmark job ({exc}); no sampler here")
        write_json(out, base | {"status": "ready", "service": service.describe()})
        log(f"ready at {endpoint} (pid {service.info.pid}, version {service.info.version})")
        next_owner = time.monotonic() + OWNER_CHECK_S
        while True:
            await asyncio.sleep(0.5)
            if not service.alive():
                status, code = "exited", 1
                reason = (f"the {req['kind']} process exited by itself with code "
                          f"{service.proc.returncode}")
                log(reason)
                break
            if time.monotonic() >= next_owner:
                next_owner = time.monotonic() + OWNER_CHECK_S
                alive = await asyncio.to_thread(owner_alive, req.get("owner"))
                if alive is False:
                    status, code = "stopped", 0
                    reason = f"its owner ({req.get('owner')}) is gone"
                    log(f"stopping: {reason}")
                    break
    except asyncio.CancelledError:
        status, code = "stopped", 0
        reason = f"stopped by {stop_reason.get('why', 'cancellation')}"
        log(reason)
    finally:
        if telemetry is not None:   # before the teardown: a stopped service is not a gap
            try:
                await asyncio.shield(telemetry.close())
            except Exception:
                log(traceback.format_exc())
        if service is not None and service.proc is not None:
            try:
                await asyncio.shield(service.teardown())
            except Exception:
                log(traceback.format_exc())
            if status != "failed":
                write_json(out, base | {"status": status, "reason": reason,
                                        "service": service.describe(),
                                        "log_tail": process.log_tail(run_dir / "service.log")
                                        if status == "exited" else None})
        if scratch and workdir.is_dir():
            shutil.rmtree(workdir, ignore_errors=True)
    return code


def main(argv: list[str] | None = None) -> int:
    import uvloop

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m aifb.slurm.service_job RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).resolve()

    def log(msg):
        print(f"[{process.wall_iso()}] {msg}", file=sys.stderr, flush=True)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(run_dir, log))
    except Exception:
        log(traceback.format_exc())
        try:
            write_json(run_dir / "service.json", {
                "job_id": os.environ.get("SLURM_JOB_ID"), "status": "failed",
                "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                "reason": "internal error in the service job: " + traceback.format_exc(limit=1).strip().splitlines()[-1]})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
