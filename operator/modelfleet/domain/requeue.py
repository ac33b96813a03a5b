"""How long a failed reconcile waits before it runs again (pure)."""


def backoff_seconds(failures: int, base: float, cap: float) -> float:
    """controller-runtime's per-item exponential backoff: `base` after the first failure, doubling with each
    further one, never above `cap`."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 60))
