"""The load engine: drives a kind's protocol client at a closed-loop concurrency or an open-loop
rate and writes one record per request (layer `load`, docs/architecture.md).

    settings   LoadSettings: a recipe's `load` block with every default defined once
    arrivals   when each request is due (closed loop: after the previous one; open loop: a
               seeded schedule on a timerfd)
    engine     one process's event loop of clients; run_load / run_load_sync
    startup    start, validate and shut down the clients; the run's identity (salt)
    limits     open-file limits for many connections
    share      one `requests: N` shared by several processes or Slurm client jobs
    processes  several load processes on this host (load.processes); worker is their entry point
    shard      the one split of the clients over processes or client jobs
    merge      the one merge of their statistics
    figures    percentiles and open-loop figures of the statistics
"""
