"""Server-side telemetry: a sampler process beside the service, on the run's own time base.

    sources   one class per interface (psutil process tree and node, Redis INFO, PostgreSQL
              pg_stat_*, Prometheus /metrics, llama-server /slots, Ollama /api/ps, NVML, RAPL)
    sampler   `python -m aifb.telemetry.sampler`: reads its configuration (sources, secrets,
              the run's t0) as JSON on stdin and appends results/<id>/telemetry.jsonl, one line
              per sample and metric, until SIGTERM
    launch    what the runner calls: which sources a kind gets, start and stop the process
    window    pure-Python statistics of telemetry.jsonl over the measurement window (counters
              as deltas and rates, gauges as mean/p95/max) - also used by the GPU check script

Why a separate process: the sampler must never share the client's event loop (it would add
latency to the very requests it explains) nor its GIL. Its own CPU time is measured by the
kernel (wait4 rusage) and reported. Every source fails soft: a scrape that fails, times out
or returns garbage writes an `up` = 0 sample with the error and the run goes on.

This package imports only the standard library at module level (psutil, pynvml and
prometheus_client are imported by the sources that need them), so that the sampler runs on a
bare python3 with just those packages (scripts/gpu_telemetry_check.sh).
"""

TELEMETRY_FILE = "telemetry.jsonl"
DEFAULT_INTERVAL_S = 1.0
MIN_INTERVAL_S = 0.1
