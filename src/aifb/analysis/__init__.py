"""Reading results (layer `analysis`, docs/architecture.md): summary.json from the request
records (summary), the metric families (metrics/), SLO rules (slo), sweep verdicts
(sweep_verdict) and rerun comparisons (compare). Reads files; never imports clients, services
or the engine."""
