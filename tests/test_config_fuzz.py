"""Property-based check of the loader: any single mutation of a valid ablation file either loads and
expands, or is refused with one ``file[:line]: [key: ]message`` line (a ConfigError) -- never a
traceback, never a half-built run list, never a file written."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import schema as config
from bench.errors import BenchError

BASE = {
    "name": "fuzz",
    "question": "does the loader refuse bad input cleanly?",
    "datasets": ["shapes"],
    "seeds": [0, 1],
    "data": {"shapes": {"n_train": 64, "n_test": 32}},
    "defaults": {
        "model": {"name": "conv", "widths": [8, 16], "latent_dim": 8},
        "loss": [{"name": "kl"}, {"name": "mse", "weight": 1.0}],
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-3, "log_every": 2},
        "eval": {"n_test": 16, "n_samples": 16, "batch_size": 8},
    },
    "arms": {"mse": {}, "ssim": {"loss": [{"name": "kl"}, {"name": "ssim"}], "train": {"lr": 3e-3}}},
}
EXAMPLES = int(os.environ.get("PEGASUS_FUZZ_EXAMPLES", "500"))
ONE_LINE = re.compile(r"^fuzz\.yaml(:\d+)?: \S.*$")


def _paths(node, prefix=()):
    """Every path to a leaf or a container in the document (the places a mutation can hit)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(BASE) if p]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-3, 300), max_size=4),
    st.sampled_from(["", "kl", "ssim", "horse", "conv", "cifar10", "nope", "1e-3", ".nan", "-1"]),
    st.dictionaries(st.sampled_from(["name", "weight", "lr", "x", "steps"]), st.integers(-2, 5), max_size=2),
)


def _mutate(doc, path, kind, value):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    last = path[-1]
    if kind == "replace":
        cur[last] = value
    elif kind == "delete":
        del cur[last]
    else:                                   # insert an unknown key beside an existing one
        if isinstance(cur, dict):
            cur[f"{last}_x" if isinstance(last, str) else "extra"] = value
        else:
            cur.append(value)
    return doc


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@pytest.mark.slow
@given(path=st.sampled_from(PATHS), kind=st.sampled_from(["replace", "delete", "insert"]), value=VALUES)
def test_a_mutated_file_loads_or_is_refused_in_one_line(tmp_path_factory, path, kind, value):
    d = tmp_path_factory.mktemp("fuzz")
    f = d / "fuzz.yaml"
    f.write_text(yaml.safe_dump(_mutate(copy.deepcopy(BASE), path, kind, value), sort_keys=False))
    before = sorted(p.name for p in d.iterdir())
    cwd = Path.cwd()
    os.chdir(d)                              # messages name the file relative to the working directory
    try:
        runs = config.expand(config.load("fuzz.yaml"))
    except BenchError as exc:
        msg = str(exc)
        assert "\n" not in msg and ONE_LINE.match(msg), msg
        assert "Traceback" not in msg
    else:
        assert runs and all(r.train.lr > 0 and r.train.steps >= 1 for r in runs)
        assert all(0 <= t.weight < float("inf") for r in runs for t in r.loss)
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in d.iterdir()) == before      # loading writes nothing


def test_fuzz_covers_every_section():
    assert {p[0] for p in PATHS} >= {"name", "datasets", "seeds", "data", "defaults", "arms"}
    assert EXAMPLES >= 1
    pytest.importorskip("hypothesis")
