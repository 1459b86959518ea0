"""Where the suite keeps things outside a checkout: one home for the cache root.

    cache_root() -> $PEGASUS_CACHE, or ~/.cache/pegasus-bench
        data/  decoded datasets        fid_stats/  reference features     probes/  class probes
        weights/  converted networks   device_peak.json  measured matmul peak
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "PEGASUS_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE, Path.home() / ".cache" / "pegasus-bench"))
