"""``ConvVAE``: one convolutional VAE whose constructor arguments are the ablation axes.

Paper baseline (the paper's sec. 3.1): encoder = convs with kernel 4, stride 2, no padding, each
followed by BatchNorm + LeakyReLU; two fully connected heads (mu, logvar); decoder = one fully
connected layer, reshaped, then transposed convs mirroring the encoder; sigmoid output.

Axes: ``kernel`` (4 | 3), ``down`` (stride | maxpool), ``up`` (deconv | upsample), ``block``
(plain | resnet), ``heads`` (fc | conv), ``widths``, ``latent_dim``, ``norm``, ``slope``.
Named variants below are thin registered factories; ``bench list`` shows their docstrings.

Heads (``heads``):

* ``fc`` (the paper): flatten the final (C, h, w) map -> ``Linear`` to mu and to logvar (D each);
  decoder: ``Linear(D, C*h*w)`` -> reshape -> BN -> LeakyReLU.
* ``conv``: the latent is a small feature map (c_z, h, w) with ``c_z = latent_dim / (h*w)``, so
  ``latent_dim`` is still the total latent size.  Encoder head: a 1x1 conv C -> 2*c_z (mu and
  logvar channels), flattened to (B, D); decoder head: reshape z to (B, c_z, h, w) -> 1x1 conv
  c_z -> C -> BN -> LeakyReLU.  ``latent_dim`` must be a multiple of h*w (ConfigError otherwise).
  Far fewer parameters than ``fc`` (claim C7).

Geometry (spatial side after each encoder stage; the decoder mirrors it back to exactly H x W;
``model.bottleneck`` is the final map's (C, h, w)).  Every conv has stride 2 (or stride 1 + 2x2
max-pool) and no padding, so a stage maps n -> floor((n - k) / 2) + 1:

==========================================  =========================  ================================
variant                                     32 px (3 stages)           96 px (4 stages)
==========================================  =========================  ================================
paper, conv, resnet, conv_heads, maxpool    32 -> 15 -> 6 -> 2         96 -> 47 -> 22 -> 10 -> 4
kernel3                                     32 -> 15 -> 7 -> 3         96 -> 47 -> 23 -> 11 -> 5
==========================================  =========================  ================================

* ``maxpool`` pads 1 pixel right/bottom before its stride-1 conv (models/blocks.py), which gives
  the strided conv's chain for every n and k: only the down/up operation differs from the paper,
  not the bottleneck or the head sizes.
* ``kernel3`` changes only the kernel (stride 2, no padding, same stages and widths), but with
  those fixed the chain cannot match kernel 4: a k3 stage gives floor((n - 1) / 2), a k4 stage
  floor((n - 2) / 2), which differ for every odd n.  So kernel3 also has a larger bottleneck
  (3x3 vs 2x2 at 32 px, 5x5 vs 4x4 at 96 px) and larger fc heads (mu + logvar + decoder Linear,
  3 * D * C * h * w weights + biases): 887,296 vs 394,496 parameters at 32 px with default widths
  (x2.25), 443,776 vs 197,376 with widths [32, 64, 128], and 39,336,448 vs 25,176,064 at 96 px
  (x1.56).  Its conv stages are smaller (9 vs 16 weights per kernel), so the total can go either
  way (32 px default widths: 1,629,827 vs 1,713,155).
* The bottleneck must be at least 2x2 (``MIN_BOTTLENECK``): a 1x1 map decodes to flat images.
  An image too small for the stages is a ConfigError on ``widths`` when the model is built, which
  ``bench plan`` does for every run.
"""
from typing import Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.errors import ConfigError
from models.blocks import Down, DownStage, ResBlock, Up, UpStage, down_size
from models.layers import Conv2d
from models.registry import MODELS, VAEOutput

# Smallest bottleneck side accepted: a 1x1 map carries no spatial layout, and nearest upsampling
# turns it into a constant map, so every decoded image would be flat.
MIN_BOTTLENECK = 2

Block = Literal["plain", "resnet"]
Heads = Literal["fc", "conv"]
Kernel = Literal[3, 4]

# logvar is clamped to this range inside ``encode``: early in training (or in a diverging run) the
# logvar head can emit values whose exp() overflows float32/bf16 (exp(89) = inf), which turns the
# KL and the reparameterised z into inf/NaN.  [-30, 20] covers std 3e-7 .. 2.2e4, far beyond any
# useful posterior; outside it the gradient is zero, which only matters in pathological regimes.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def default_widths(image_size: int) -> list[int]:
    """Paper-scale encoder widths: 3 stages up to 32 px (CIFAR-10), 4 above (STL-10, 96 px)."""
    return [64, 128, 256] if image_size <= 32 else [64, 128, 256, 512]


def default_latent(image_size: int) -> int:
    """The paper's latent sizes: 128 for 32 px (CIFAR-10), 1024 for larger images (STL-10)."""
    return 128 if image_size <= 32 else 1024


def spatial_chain(name: str, image_size: int, stages: int, kernel: int, down: Down) -> list[int]:
    """Spatial side before and after each encoder stage; the same for down='stride' and 'maxpool',
    so the decoder (deconv or upsample) mirrors it exactly.  ConfigError (key ``widths``) when the
    bottleneck would be smaller than MIN_BOTTLENECK."""
    sizes = [image_size]
    for _ in range(stages):
        sizes.append(down_size(sizes[-1], kernel, down))
        if sizes[-1] < MIN_BOTTLENECK:
            raise ConfigError(
                f"model {name!r}: image_size {image_size} too small for {stages} stages of "
                f"kernel {kernel} (spatial chain {' -> '.join(map(str, sizes))}; the bottleneck "
                f"must be at least {MIN_BOTTLENECK}x{MIN_BOTTLENECK}); use fewer widths",
                key="widths")
    return sizes


class ConvVAE(nn.Module):
    """Convolutional VAE; see the module docstring for the axes.  Images are (B, 3, H, W) in [0, 1].

    ``name`` is only used in error messages (the registered factory's name).
    """

    def __init__(self, *, image_size: int, latent_dim: int, widths: list[int], kernel: int = 4,
                 down: Down = "stride", up: Up = "deconv", block: Block = "plain", heads: Heads = "fc",
                 norm: bool = True, slope: float = 0.2, name: str = "conv"):
        super().__init__()
        widths = list(widths)                        # never keep (or mutate) the caller's list
        _check(name, image_size=image_size, latent_dim=latent_dim, widths=widths, kernel=kernel,
               down=down, up=up, block=block, heads=heads)
        sizes = spatial_chain(name, image_size, len(widths), kernel, down)
        self.image_size, self.latent_dim, self.sizes = image_size, latent_dim, sizes
        self.widths = tuple(widths)
        c, s = widths[-1], sizes[-1]                 # bottleneck: the final feature map (c, s, s)
        resnet = block == "resnet"
        act = {"norm": norm, "slope": slope}

        # -- encoder: one stage per width (+ a residual block at that resolution for resnet)
        chans = [3] + widths
        self.stages = nn.ModuleList(
            nn.Sequential(DownStage(chans[i], chans[i + 1], kernel=kernel, mode=down, **act),
                          *([ResBlock(chans[i + 1], **act)] if resnet else []))
            for i in range(len(widths)))

        # -- heads
        if heads == "fc":
            self.to_mu = nn.Linear(c * s * s, latent_dim)
            self.to_logvar = nn.Linear(c * s * s, latent_dim)
            self.from_z = nn.Sequential(nn.Linear(latent_dim, c * s * s), nn.Unflatten(1, (c, s, s)))
        else:
            if latent_dim % (s * s):
                lo = max(s * s, latent_dim // (s * s) * s * s)
                raise ConfigError(
                    f"model {name!r}: heads 'conv' needs latent_dim divisible by the final feature "
                    f"map size {s}x{s}={s * s} (got {latent_dim}; e.g. {lo} or {lo + s * s})",
                    key="latent_dim")
            cz = latent_dim // (s * s)
            self.to_stats = Conv2d(c, 2 * cz, 1)  # mu and logvar channels
            self.from_z = nn.Sequential(nn.Unflatten(1, (cz, s, s)), Conv2d(cz, c, 1, bias=not norm))
        if norm:
            self.from_z.append(nn.BatchNorm2d(c))
        self.from_z.append(nn.LeakyReLU(slope))
        self.heads = heads

        # -- decoder: mirror of the encoder (sizes ``sizes`` reversed); the last stage is the bare output
        #    conv (3 channels), followed by the sigmoid in ``decode``
        dec = []
        for i in reversed(range(len(widths))):
            c_out = chans[i]
            dec.append(nn.Sequential(
                *([ResBlock(chans[i + 1], **act)] if resnet else []),
                UpStage(chans[i + 1], c_out, kernel=kernel, mode=up, in_size=sizes[i + 1],
                        out_size=sizes[i], final=i == 0, **act)))
        self.decoder = nn.Sequential(*dec)

    # -- API ---------------------------------------------------------------------------------
    @property
    def bottleneck(self) -> tuple[int, int, int]:
        """(C, h, w) of the final encoder feature map, the input of the latent heads."""
        return self.widths[-1], self.sizes[-1], self.sizes[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps after each stage, [(B, widths[i], s_i, s_i), ...]."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> (mu, logvar), each (B, latent_dim); logvar clamped (see LOGVAR_MIN)."""
        h = self.features(x)[-1]
        if self.heads == "fc":
            h = h.flatten(1)
            mu, logvar = self.to_mu(h), self.to_logvar(h)
        else:
            mu, logvar = self.to_stats(h).chunk(2, dim=1)       # (B, c_z, s, s) each
            mu, logvar = mu.flatten(1), logvar.flatten(1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(self.from_z(z)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)                  # reparameterisation
        return VAEOutput(self.decode(z), mu, logvar, z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from z ~ N(0, I) drawn from ``generator``: (n, 3, H, W) in [0, 1]."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(z)


def _check(name: str, *, image_size, latent_dim, widths, kernel, down, up, block, heads) -> None:
    """User-facing validation (pydantic already checks types when built from YAML)."""
    def bad(key: str, msg: str):
        raise ConfigError(f"model {name!r}: {msg}", key=key)
    if image_size < 1:
        bad("image_size", f"image_size must be positive (got {image_size})")
    if latent_dim < 1:
        bad("latent_dim", f"latent_dim must be positive (got {latent_dim})")
    if not widths or any(w < 1 for w in widths):
        bad("widths", f"widths must be a non-empty list of positive channel counts (got {widths})")
    for key, val, allowed in (("kernel", kernel, (3, 4)), ("down", down, ("stride", "maxpool")),
                              ("up", up, ("deconv", "upsample")), ("block", block, ("plain", "resnet")),
                              ("heads", heads, ("fc", "conv"))):
        if val not in allowed:
            bad(key, f"{key} must be one of {', '.join(map(repr, allowed))} (got {val!r})")


# -- registered variants (thin factories; defaults = the paper) ---------------------------------
# Every factory takes ``image_size`` (filled in by the engine) plus ``latent_dim`` and ``widths``
# (None -> the paper's per-resolution defaults).  Named variants fix their architecture; to combine
# axes (e.g. resnet blocks + conv heads) use ``conv`` with explicit arguments.

def _sized(image_size: int, latent_dim: int | None, widths: list[int] | None) -> dict:
    return {"image_size": image_size, "latent_dim": default_latent(image_size) if latent_dim is None else latent_dim,
            "widths": list(widths) if widths is not None else default_widths(image_size)}


@MODELS.register("conv")
def conv(image_size: int, latent_dim: int | None = None, widths: list[int] | None = None,
         kernel: Kernel = 4, down: Down = "stride", up: Up = "deconv", block: Block = "plain",
         heads: Heads = "fc", norm: bool = True, slope: float = 0.2) -> ConvVAE:
    """General conv VAE, every ablation axis exposed; defaults = the paper's baseline."""
    return ConvVAE(**_sized(image_size, latent_dim, widths), kernel=kernel, down=down, up=up,
                   block=block, heads=heads, norm=norm, slope=slope, name="conv")


@MODELS.register("paper")
def paper(image_size: int, latent_dim: int | None = None, widths: list[int] | None = None) -> ConvVAE:
    """The paper's baseline: k4/s2/p0 convs, BN + LeakyReLU(0.2), fc heads, transposed-conv decoder."""
    return ConvVAE(**_sized(image_size, latent_dim, widths), name="paper")


@MODELS.register("resnet")
def resnet(image_size: int, latent_dim: int | None = None, widths: list[int] | None = None) -> ConvVAE:
    """Paper baseline + a residual block (two 3x3 convs, identity skip) after every stage."""
    return ConvVAE(**_sized(image_size, latent_dim, widths), block="resnet", name="resnet")


@MODELS.register("maxpool")
def maxpool(image_size: int, latent_dim: int | None = None, widths: list[int] | None = None) -> ConvVAE:
    """Stride-1 conv + 2x2 max-pool down, nearest upsample + stride-1 conv up (vs strided convs).

    Same spatial chain, bottleneck and head sizes as ``paper`` (1-pixel right/bottom pad before
    each stride-1 conv): 32 -> 15 -> 6 -> 2, 96 -> 47 -> 22 -> 10 -> 4.
    """
    return ConvVAE(**_sized(image_size, latent_dim, widths), down="maxpool", up="upsample",
                   name="maxpool")


@MODELS.register("kernel3")
def kernel3(image_size: int, latent_dim: int | None = None, widths: list[int] | None = None) -> ConvVAE:
    """Paper baseline with 3x3 kernels instead of 4x4 (still stride 2, no padding).

    Not matched exactly: the bottleneck is larger (32 -> 15 -> 7 -> 3 vs paper's 2x2;
    96 -> 47 -> 23 -> 11 -> 5 vs 4x4), so the fc heads are x2.25 (32 px) / x1.56 (96 px) larger,
    e.g. 887,296 vs 394,496 head parameters at 32 px, default widths.
    """
    return ConvVAE(**_sized(image_size, latent_dim, widths), kernel=3, name="kernel3")


@MODELS.register("conv_heads")
def conv_heads(image_size: int, latent_dim: int | None = None,
               widths: list[int] | None = None) -> ConvVAE:
    """Paper baseline with 1x1-conv latent heads (latent = a c_z x h x w map) instead of fc heads."""
    return ConvVAE(**_sized(image_size, latent_dim, widths), heads="conv", name="conv_heads")


# -- cost ---------------------------------------------------------------------------------------

def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them; BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass (encode + reparameterise + decode) of one image, eval mode.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convs, 2 FLOPs per
    multiply-add; element-wise ops, BN, pooling and upsampling are not counted).
    """
    p = next(model.parameters())
    x = torch.rand(1, 3, image_size, image_size, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def train_flops_per_image(model: nn.Module, image_size: int) -> int:
    """FLOPs of one training step's forward and backward pass, per image, as a step does them.

    Counted like :func:`flops_per_image` (``FlopCounterMode``: matmuls and convs, 2 FLOPs per
    multiply-add), over the forward pass and the gradients of every trainable parameter from a loss
    on recon, mu and logvar.  The batch needs no gradient, so the first layer's input gradient is not
    computed and not counted: the step is a little under the usual 3 x forward (paper model: 1.5% at
    32 px, 0.7% at 96 px).  Side-effect free: eval mode (BN's running statistics untouched; convs and
    matmuls are the same in both modes), gradients returned by ``torch.autograd.grad``, never stored,
    and the global random state restored (the forward pass draws its noise from it).
    """
    p = next(model.parameters())
    params = [q for q in model.parameters() if q.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with (torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []), torch.enable_grad(),
              FlopCounterMode(display=False) as counter):
            x = torch.rand(1, 3, image_size, image_size, device=p.device, dtype=p.dtype)
            out = model(x)
            loss = out.recon.sum() + out.mu.sum() + out.logvar.sum()
            torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


