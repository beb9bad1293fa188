"""One merge of per-engine load_stats (aifb.load.merge) for worker processes and Slurm client
jobs alike: a lost member is ranked the same way, and an open-loop run keeps its scheduling
lags. ClientJobs is built without Slurm (as the coordinator tests do)."""

import time

import pytest

from aifb.load.merge import merge_stats


class _Clock:
    def __init__(self):
        from aifb.clock import now_ns
        self.t0_ns, self.t0_unix_ns = now_ns(), time.time_ns()


def _job_stats(stopped_by, lag_n, lag_p99, lag_max, lag_mean, t_end, util, loop_p99):
    return {"t_load_start": 1.0, "warmup_end": 2.0, "measure_end": 3.0, "t_load_end": t_end,
            "window_s": 1.0, "mode": "open", "clients": 1, "processes": 1, "concurrency": 1,
            "connections": 1, "requests_issued": 60, "records_written": 60,
            "records_by_phase": {"warmup": 5, "measure": 50, "cooldown": 5},
            "measured": {"ok": 49, "errors": 1}, "errors_by_type": {"Timeout": 1},
            "connect_attempts": {"by_phase": {"warmup": 0, "measure": 0, "cooldown": 0},
                                 "measure_errors_by_type": {}},
            "stopped_by": stopped_by,
            "client_cpu": {"cpu_s": util, "util_of_one_core": util},
            "loop_lag_s": {"n": 100, "p50": 0.0, "p99": loop_p99, "max": loop_p99},
            "offered_rate": 50.0, "arrival": "poisson", "achieved_rate": 50.0, "scheduled": 52,
            "sched_lag_s": {"n": lag_n, "p50": 1e-05, "p90": 2e-05, "p99": lag_p99,
                            "max": lag_max, "mean": lag_mean}}


SETTINGS = {"clients": 3, "concurrency": 1, "rate": 150.0, "arrival": "poisson",
            "duration_s": 1.0, "requests": None, "warmup_s": 1.0, "cooldown_s": 0.0,
            "timeout_s": 2.0}


def _client_jobs(tmp_path):
    from aifb.slurm.client_jobs import ClientJobs
    target = {"name": "t", "executor": "slurm", "clients": {"max_per_job": 1}}
    cj = ClientJobs(run={"benchmark_id": "BM-20250101-001"}, run_dir=tmp_path, target=target,
                    endpoint="redis://127.0.0.1:1", settings=SETTINGS,
                    recipe={"service": {"kind": "redis"}}, clock=_Clock(), log=lambda m: None)
    cj.jobs[1]["job_id"], cj.jobs[2]["job_id"] = "4242", "4243"
    return cj


def test_slurm_merge_is_the_engine_merge(tmp_path):
    """Job 0 and job 1 report, job 2 is lost; job 1 was cancelled: the run is `cancelled` (the
    more serious stop, as for processes), its sched lags are kept, its figures summed."""
    cj = _client_jobs(tmp_path)
    stats0 = _job_stats("duration", 50, 3e-05, 4e-05, 1e-05, 3.5, 0.4, 0.002)
    cj.jobs[1]["stats"] = _job_stats("cancelled", 30, 5e-05, 9e-05, 2e-05, 3.6, 0.7, 0.001)
    m = cj.merge_stats(stats0)
    assert m["stopped_by"] == "cancelled"
    assert m["lost_client_jobs"] == [{"client_job": 2, "job_id": "4243"}]
    assert m["measured"] == {"ok": 98, "errors": 2} and m["errors_by_type"] == {"Timeout": 2}
    assert m["t_load_end"] == 3.6 and m["window_s"] == 1.0 and m["clients"] == 3
    assert m["offered_rate"] == 150.0 and m["achieved_rate"] == 100.0
    # the requests planned inside the window are summed over the members that reported
    assert m["scheduled"] == 104 and m["scheduled_rate"] == 104.0
    lag = m["sched_lag_s"]
    assert lag["n"] == 80 and lag["p99"] == 5e-05 and lag["max"] == 9e-05
    assert lag["mean"] == pytest.approx((50 * 1e-05 + 30 * 2e-05) / 80)
    assert m["client_cpu"]["client_job"] == 1 and m["client_cpu"]["util_of_one_core"] == 0.7
    assert m["loop_lag_s"]["client_job"] == 0
    assert [j["k"] for j in m["client_jobs"]] == [0, 1, 2] and m["client_jobs"][2]["stats"] is None


def test_a_lost_member_is_ranked_alike_for_processes_and_jobs(tmp_path):
    """Without a more serious stop, a lost member marks the run (client_process_failed for a
    process, client_job_lost for a client job); the common figures are the same."""
    cj = _client_jobs(tmp_path)
    a = _job_stats("duration", 50, 3e-05, 4e-05, 1e-05, 3.5, 0.4, 0.002)
    b = _job_stats("service_unreachable", 30, 5e-05, 9e-05, 2e-05, 3.6, 0.7, 0.001)
    cj.jobs[1]["stats"] = b
    jobs = cj.merge_stats(a)
    procs = merge_stats([(a, None), (b, None), None], blocks=[(0, 1), (1, 2), (2, 3)],
                        pids=[1, 2, 3], load=SETTINGS, lost=[{"process": 2}])
    assert jobs["stopped_by"] == "client_job_lost"
    assert procs["stopped_by"] == "client_process_failed"
    for key in ("warmup_end", "measure_end", "t_load_end", "window_s", "measured",
                "records_by_phase", "errors_by_type", "connect_attempts", "sched_lag_s",
                "achieved_rate", "offered_rate", "scheduled", "scheduled_rate"):
        assert jobs[key] == procs[key], key


def test_cpu_sums_count_every_process_of_every_client_job(tmp_path):
    """A Slurm client job of two processes (3 s and 1 s of CPU) and two single-process jobs
    (1.5 s, 0.5 s): the run's client CPU is 6 s, not the sum of each job's busiest process
    (5 s); with a job lost, or a process of a job lost, it is unknown (None), not a part."""
    def job(cpu_s, util):
        return _job_stats("duration", 50, 3e-05, 4e-05, 1e-05, 3.5, util, 0.001) | {
            "client_cpu": {"cpu_s": cpu_s, "util_of_one_core": util}}
    two = merge_stats([(job(3.0, 0.3), None), (job(1.0, 0.1), None)], blocks=[(0, 1), (1, 2)],
                      pids=[7, 8], load=SETTINGS, lost=[])
    assert two["client_cpu"]["cpu_s_all_processes"] == 4.0
    assert two["client_cpu"]["util_all_processes"] == pytest.approx(0.4)
    cj = _client_jobs(tmp_path)
    cj.jobs[1]["stats"], cj.jobs[2]["stats"] = job(1.5, 0.15), job(0.5, 0.05)
    m = cj.merge_stats(two)
    assert m["client_cpu"]["cpu_s_all_client_jobs"] == 6.0
    assert m["client_cpu"]["util_all_client_jobs"] == pytest.approx(0.6)
    cj.jobs[2]["stats"] = None
    assert cj.merge_stats(two)["client_cpu"]["cpu_s_all_client_jobs"] is None
    half = merge_stats([(job(3.0, 0.3), None), None], blocks=[(0, 1), (1, 2)], pids=[7, 8],
                       load=SETTINGS, lost=[{"process": 1}])
    assert half["client_cpu"]["cpu_s_all_processes"] is None
    cj.jobs[2]["stats"] = job(0.5, 0.05)
    assert cj.merge_stats(half)["client_cpu"]["cpu_s_all_client_jobs"] is None
