"""GPU telemetry check: run the NVML source of aifb's sampler for a few seconds on a machine
with NVIDIA GPUs and print what the summary would say. Needs only python3 (>= 3.10), this
repository's src/ and gpu_deps/ (nvidia-ml-py, psutil) - see scripts/gpu_telemetry_check.sh.

    python3 scripts/gpu_telemetry_check.py OUT_DIR [SECONDS] [INTERVAL_S]

Writes OUT_DIR/telemetry.jsonl (the raw samples) and OUT_DIR/gpu_telemetry_summary.json. The
GPU is sampled as it is (no load is generated: no GPU library is assumed). Exit code 1 when
NVML gave no sample.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from aifb.clock import now_ns
from aifb.telemetry import window as tw
from aifb.telemetry.launch import Sampler
from aifb.telemetry.server import server_block


def main() -> int:
    out = Path(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    out.mkdir(parents=True, exist_ok=True)
    (out / "telemetry.jsonl").unlink(missing_ok=True)
    sources = [{"type": "nvml", "name": "gpu"}, {"type": "node", "name": "node"}]
    t0 = now_ns()
    smp = Sampler.start(out, t0, interval, sources, log_path=out / "sampler.log")
    time.sleep(seconds)
    rec = smp.stop()
    tel = tw.load(out / "telemetry.jsonl")
    ups = [t for t, ok, _ in tel.up.get("gpu", []) if ok]
    if not ups:
        errs = {e for _, ok, e in tel.up.get("gpu", []) if not ok}
        print(f"NVML gave no sample: {errs or 'no line at all'}; sampler log: "
              f"{(out / 'sampler.log').read_text()[-2000:]}")
        return 1
    lo, hi = ups[0], ups[-1]
    blk = server_block(tel, lo, hi, interval, {}, rec)
    gpu = blk["efficiency"].get("gpu") or {}
    summary = {"seconds": seconds, "interval_s": interval, "window": [lo, hi],
               "gpu_samples": len(ups), "gpu_source": blk["sources"].get("gpu"),
               "sampler": rec, "gpu": gpu,
               "gpu_metrics": blk["metrics"].get("gpu"), "node_cpu_busy_ratio":
               blk["efficiency"].get("node_cpu_busy_ratio")}
    (out / "gpu_telemetry_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"window {hi - lo:.2f} s, {len(ups)} NVML samples every {interval:g} s "
          f"(coverage {blk['sources']['gpu']['coverage']:.0%}, gaps {blk['sources']['gpu']['gaps']})")
    for g, d in sorted((gpu.get("per_gpu") or {}).items()):
        p = d.get("power_w_mean")
        integ = d.get("energy_j_from_power")
        print(f"GPU {g}: power mean {p:.1f} W, util mean {d.get('util_mean') or 0:.1%}, "
              f"energy {d.get('energy_j') or 0:.2f} J ({d.get('energy_source')}), "
              f"power integral {integ if integ is not None else float('nan'):.2f} J"
              + (f", counter/integral {d['energy_j'] / integ:.3f}"
                 if integ and d.get("energy_source") == "NVML total energy counter" else ""))
    for key in ("sm_clock_hz", "temperature_celsius", "memory_used_bytes"):
        for k, v in sorted((blk["metrics"].get("gpu") or {}).items()):
            if k.startswith(key):
                print(f"  {k}: mean {v['mean']:.4g}, max {v['max']:.4g}")
    print(f"sampler CPU {rec['sampler_cpu_s']:.3f} s over {rec['sampler_wall_s']:.2f} s "
          f"({rec['sampler_cpu_util']:.2%} of a core), exit {rec['exit_code']}")
    print(f"wrote {out / 'telemetry.jsonl'} and {out / 'gpu_telemetry_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
