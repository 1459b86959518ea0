"""Running a sweep: the per-run seam (lock, train, score, metrics.json last), the local, parallel and
Ray executors, status, plan."""
