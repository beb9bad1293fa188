"""How a load's clients are shared out: contiguous, near-equal blocks of the global client
indices, one per worker process (aifb.load.processes) or Slurm client job (aifb.slurm)."""

from __future__ import annotations


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal [lo, hi) blocks of range(n)."""
    return [(n * k // parts, n * (k + 1) // parts) for k in range(parts)]
