"""The process-wide CPU allocator setting (bench/train/runtime.py ``keep_freed_memory``): it keeps freed
memory in the process, it can be switched off, and it does not change what training computes.

Each check runs in a fresh interpreter: the setting belongs to the process, and this one's allocator
has already served the rest of the test session.
"""
import os
import subprocess
import sys

import pytest

from bench.train.runtime import ENV_ALLOCATOR

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)"),
              pytest.mark.slow]   # fresh interpreters: the slow tier

# RSS (MiB) after allocating, filling and freeing 256 MiB, minus RSS before.
KEPT_AFTER_FREE = """
import torch
from bench.train.runtime import keep_freed_memory
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
print(keep_freed_memory())
before = rss_mib()
t = torch.ones(64 * 2**20)
del t
print(round(rss_mib() - before))
"""

# Five steps of the suite's train step on the paper model at 32 px; a hash of the parameters after.
FIVE_STEPS = """
import hashlib, torch
from bench.config.schema import TrainSpec
from bench.train.runtime import keep_freed_memory
from bench.train.loop import make_optimizer, train_step
from losses import Objective
from models import MODELS
print(keep_freed_memory())
torch.manual_seed(0)
cfg = TrainSpec()
m = MODELS.build("paper", {"image_size": 32, "widths": [32, 64, 128]}).to(memory_format=torch.channels_last)
objective = Objective.from_config([{"name": "kl", "weight": 1.0}, {"name": "mse", "weight": 1.0}])
opt, g = make_optimizer(m, cfg, torch.device("cpu")), torch.Generator().manual_seed(0)
x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=torch.channels_last)
for i in range(5):
    train_step(m, m, objective, opt, x, g, i, cfg, torch.device("cpu"))
h = hashlib.sha256()
for p in m.state_dict().values():
    h.update(p.detach().contiguous().numpy().tobytes())
print(h.hexdigest())
"""


def _python(code: str, allocator: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_ALLOCATOR}
    if allocator:
        env[ENV_ALLOCATOR] = allocator
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:2]


def test_freed_memory_stays_in_the_process_unless_switched_off():
    kept, grown = _python(KEPT_AFTER_FREE, None)
    assert kept.startswith("glibc, freed memory kept"), kept
    assert int(grown) > 200                       # the 256 MiB block stayed mapped for reuse
    system, grown = _python(KEPT_AFTER_FREE, "system")
    assert system == f"system ({ENV_ALLOCATOR}=system)"
    assert int(grown) < 50                        # glibc unmapped it on free (its default)


def test_keeping_freed_memory_changes_no_result():
    kept, kept_hash = _python(FIVE_STEPS, None)
    system, system_hash = _python(FIVE_STEPS, "system")
    assert kept.startswith("glibc") and system.startswith("system")
    assert kept_hash == system_hash
