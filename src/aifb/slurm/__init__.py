"""Running a benchmark's service and clients as Slurm jobs (layer `slurm`, docs/architecture.md
and docs/slurm.md).

    targets           targets.yaml: which cluster, partition, image, how the service is deployed
    commands          sbatch / squeue / scancel wrappers, job ownership and the job comment marker
    service_launcher  submits the service job and waits for its service.json
    service_job       `python -m aifb.slurm.service_job`: the service on its node
    client_jobs       the extra client jobs of one run: plan, coordination, records and stats merge
    channel           their HMAC-authenticated channel to the coordinator and clock sampling
    client            `python -m aifb.slurm.client`: one client job's load
    cleanup           `aifb cleanup`: jobs this workflow left behind
"""
