"""AI Factory Bench: reproducible benchmarks of AI-factory services.

Layers (imports point downward only):
    cli, workflow scripts               entry points
    registry, sweep, index, rerun       know files, not sockets
    report, summary                     read records from files; never import clients or the engine
    runner -> engine, launch            the engine drives any client; launchers start/stop services
    clients.*, services.*               one module per protocol / service kind, registered by kind
    recipe, records, slo, clock, paths  plain data
"""

__version__ = "0.1.0"
