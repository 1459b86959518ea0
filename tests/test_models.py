"""ConvVAE and its registered variants: shapes, exact size bookkeeping, geometry, determinism, cost."""
import itertools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.errors import ConfigError
from models import MODELS, VAEOutput
from models.blocks import down_size
from models.conv import LOGVAR_MAX, ConvVAE, count_params, default_widths, flops_per_image, train_flops_per_image

SIZES = [32, 96]
SMALL = {32: [8, 16, 16], 96: [8, 16, 16, 16]}   # tiny widths: fast; final map 2x2 / 4x4 (k4)
LATENT = 16                                      # divisible by every final map size above
NARROW = [32, 64, 128]                           # the CPU-scale widths (ablations/*_cpu.yaml)
# the documented geometry (models/conv.py): spatial side after each encoder stage
CHAIN_K4 = {32: [32, 15, 6, 2], 96: [96, 47, 22, 10, 4]}
CHAIN_K3 = {32: [32, 15, 7, 3], 96: [96, 47, 23, 11, 5]}


def small(name: str, size: int, **kw) -> ConvVAE:
    return MODELS.build(name, {"image_size": size, "widths": SMALL[size], "latent_dim": LATENT, **kw})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", MODELS.names())
def test_forward_shapes_and_range(name, size):
    model = small(name, size)
    x = torch.rand(3, 3, size, size)
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, VAEOutput)
    assert out.recon.shape == (3, 3, size, size)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, LATENT)
    assert model.latent_dim == LATENT
    assert out.recon.min() >= 0 and out.recon.max() <= 1
    mu, logvar = model.encode(x)
    assert model.decode(mu).shape == (3, 3, size, size)
    assert [f.shape[1] for f in model.features(x)] == SMALL[size]


@pytest.mark.parametrize("name", MODELS.names())
def test_sample_and_noise_are_seeded(name):
    model = small(name, 32).eval()
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, generator=torch.Generator().manual_seed(1))
    c = model.sample(4, generator=torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    x = torch.rand(2, 3, 32, 32)
    z1 = model(x, generator=torch.Generator().manual_seed(5)).z
    z2 = model(x, generator=torch.Generator().manual_seed(5)).z
    assert torch.equal(z1, z2)


@pytest.mark.parametrize("size", [33, 96])
def test_every_size_path_returns_exact_size(size):
    """Odd sizes and mixed paths (maxpool encoder + deconv decoder) still come back exactly."""
    widths = [4, 4, 4, 4] if size == 96 else [4, 4, 4]
    for kernel, down, up, heads in itertools.product((3, 4), ("stride", "maxpool"), ("deconv", "upsample"),
                                                     ("fc", "conv")):
        side = size
        for _ in widths:
            side = down_size(side, kernel, down)
        model = ConvVAE(image_size=size, latent_dim=2 * side * side, widths=widths, kernel=kernel,
                        down=down, up=up, heads=heads).eval()
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            out = model(x)
            feats = model.features(x)
        assert out.recon.shape == (1, 3, size, size), (kernel, down, up, heads)
        assert [f.shape[-1] for f in feats] == [f.shape[-2] for f in feats] == model.sizes[1:]
        assert model.bottleneck == (4, side, side)


@pytest.mark.parametrize("kernel", [3, 4])
def test_maxpool_stage_has_the_strided_stage_size(kernel):
    """A max-pool stage (1 px right/bottom pad, stride-1 conv, 2x2 pool) = a k/s2/p0 conv, for every n."""
    for n in range(kernel, 200):
        assert down_size(n, kernel, "maxpool") == down_size(n, kernel, "stride") == (n - kernel) // 2 + 1


def test_paper_baseline_defaults_and_sizes():
    m32 = MODELS.build("paper", {"image_size": 32})
    assert m32.sizes == CHAIN_K4[32] and m32.bottleneck == (256, 2, 2)
    assert m32.latent_dim == 128
    feats = m32.features(torch.rand(2, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 15, 15), (128, 6, 6), (256, 2, 2)]
    # the decoder mirrors the encoder exactly: 2 -> 6 -> 15 -> 32
    sizes = []
    hooks = [st.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for st in m32.decoder]
    m32.decode(torch.zeros(2, 128))
    for h in hooks:
        h.remove()
    assert sizes == [6, 15, 32]
    m96 = MODELS.build("paper", {"image_size": 96})
    assert m96.sizes == CHAIN_K4[96] and m96.bottleneck == (512, 4, 4) and m96.latent_dim == 1024


def _geometry_cases():
    """(name, size, widths) for every registered model: default widths at 32 and 96, narrow at 32."""
    return [pytest.param(name, size, None, id=f"{name}-{size}-default")
            for name in MODELS.names() for size in SIZES] + \
           [pytest.param(name, 32, NARROW, id=f"{name}-32-narrow") for name in MODELS.names()]


@pytest.mark.parametrize("name,size,widths", _geometry_cases())
def test_decoded_images_vary_spatially(name, size, widths):
    """A 1x1 bottleneck decodes to flat images (spatial std exactly 0); every variant must not."""
    model = MODELS.build(name, {"image_size": size, "widths": widths}).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        images = model.decode(torch.randn(4, model.latent_dim, generator=g))
    assert images.shape == (4, 3, size, size)
    std = images.flatten(2).std(dim=2)                      # (B, 3): spatial std per image and channel
    assert (std > 1e-4).all(), std


@pytest.mark.parametrize("name,size,widths", _geometry_cases())
def test_bottleneck_is_at_least_2x2(name, size, widths):
    model = MODELS.build(name, {"image_size": size, "widths": widths})
    c, h, w = model.bottleneck
    assert h >= 2 and w >= 2
    assert c == (widths or default_widths(size))[-1]
    with torch.no_grad():
        last = model.eval().features(torch.rand(1, 3, size, size))[-1]
    assert tuple(last.shape[1:]) == model.bottleneck


@pytest.mark.parametrize("size", SIZES)
def test_maxpool_has_the_paper_geometry(size):
    """C5 compares only the down/up operation: same chain, bottleneck and fc heads as the paper."""
    paper, pool = MODELS.build("paper", {"image_size": size}), MODELS.build("maxpool", {"image_size": size})
    assert pool.sizes == paper.sizes == CHAIN_K4[size]
    assert pool.bottleneck == paper.bottleneck
    for head in ("to_mu", "to_logvar", "from_z"):
        shapes = lambda m: [tuple(p.shape) for p in getattr(m, head).parameters()]
        assert shapes(pool) == shapes(paper), head
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        assert [f.shape for f in pool.eval().features(x)] == [f.shape for f in paper.eval().features(x)]


def _convs(model):
    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


@pytest.mark.parametrize("size", SIZES)
def test_kernel3_changes_only_the_kernel(size):
    """C4: stride 2 and padding 0 in every conv, like the paper; the documented larger bottleneck."""
    paper, k3 = MODELS.build("paper", {"image_size": size}), MODELS.build("kernel3", {"image_size": size})
    convs = _convs(k3)
    assert convs and all(m.kernel_size == (3, 3) and m.stride == (2, 2) and m.padding == (0, 0)
                         for m in convs)
    assert [(type(m), m.in_channels, m.out_channels, m.stride, m.padding) for m in convs] == \
           [(type(m), m.in_channels, m.out_channels, m.stride, m.padding) for m in _convs(paper)]
    assert {m.kernel_size for m in _convs(paper)} == {(4, 4)}
    # what does differ (documented in models/conv.py): the chain, hence bottleneck and fc heads
    assert k3.sizes == CHAIN_K3[size]
    side = CHAIN_K3[size][-1]
    assert k3.bottleneck == (default_widths(size)[-1], side, side)
    assert k3.to_mu.weight.shape == (k3.latent_dim, default_widths(size)[-1] * side * side)


def test_conv_factory_defaults_equal_paper():
    a, b = MODELS.build("conv", {"image_size": 32}), MODELS.build("paper", {"image_size": 32})
    assert count_params(a) == count_params(b)
    assert [tuple(p.shape) for p in a.parameters()] == [tuple(p.shape) for p in b.parameters()]


@pytest.mark.parametrize("name,size,widths", [
    ("conv", 16, [8, 8, 8, 8]), ("paper", 8, None), ("maxpool", 16, [8, 8, 8]),
    # bottleneck would be 1x1 (accepted before the 2x2 minimum): 24 -> 11 -> 4 -> 1, ...
    ("paper", 24, None), ("maxpool", 24, None), ("conv_heads", 24, None), ("resnet", 24, NARROW),
    ("kernel3", 16, None),                          # 16 -> 7 -> 3 -> 1
    ("paper", 48, None), ("maxpool", 48, None),     # 48 -> 23 -> 10 -> 4 -> 1 (4 stages above 32 px)
    ("maxpool", 5, [8])])                           # pooled stage 5 -> 1
def test_too_small_image_is_a_config_error(name, size, widths):
    with pytest.raises(ConfigError, match=f"image_size {size} too small") as exc:
        MODELS.build(name, {"image_size": size, "widths": widths})
    assert exc.value.key == "widths" and "use fewer widths" in str(exc.value)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_accepted_size_has_a_2x2_bottleneck(name):
    """Small images either build with a bottleneck >= 2x2 or raise ConfigError(key='widths')."""
    built, rejected = 0, 0
    for size in range(8, 41):
        # latent 144 is divisible by 4, 9 and 16, every bottleneck these sizes reach (conv heads)
        try:
            model = MODELS.build(name, {"image_size": size, "widths": [4, 4, 4], "latent_dim": 144})
        except ConfigError as exc:
            assert exc.key == "widths", (size, exc)
            rejected += 1
            continue
        built += 1
        assert model.bottleneck[1] >= 2 and model.bottleneck[2] >= 2, size
        with torch.no_grad():
            assert model.eval().decode(torch.randn(1, 144)).shape == (1, 3, size, size)
    assert built and rejected


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError) as exc:
        MODELS.bind("conv", {"image_size": 32, "down": "pool"})
    assert exc.value.key == "down"
    with pytest.raises(ConfigError, match="did you mean 'widths'"):
        MODELS.bind("conv", {"image_size": 32, "width": [8]})
    with pytest.raises(ConfigError, match="divisible") as exc:       # 2x2 final map, 13 % 4 != 0
        MODELS.build("conv_heads", {"image_size": 32, "widths": [8, 8, 8], "latent_dim": 13})
    assert exc.value.key == "latent_dim"
    with pytest.raises(ConfigError):
        ConvVAE(image_size=32, latent_dim=8, widths=[])


def test_widths_list_is_not_mutated_or_kept():
    widths = [8, 16, 16]
    MODELS.build("resnet", {"image_size": 32, "widths": widths, "latent_dim": 8})
    assert widths == [8, 16, 16]


def test_logvar_is_clamped():
    model = small("paper", 32)
    with torch.no_grad():
        model.to_logvar.bias.fill_(1e4)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.logvar.max() <= LOGVAR_MAX
    assert torch.isfinite(out.z).all() and torch.isfinite(out.recon).all()


@pytest.mark.parametrize("size", SIZES)
def test_fc_heads_have_far_more_params_than_conv_heads(size):
    """C7: fc heads cost 3*D*C*h*w weights, conv heads 3*C*D/(h*w): a factor (h*w)^2."""
    def head_params(m):
        mods = [m.from_z] + ([m.to_mu, m.to_logvar] if m.heads == "fc" else [m.to_stats])
        return sum(count_params(x) for x in mods)
    fc, cv = MODELS.build("paper", {"image_size": size}), MODELS.build("conv_heads", {"image_size": size})
    hw = fc.sizes[-1] ** 2
    assert head_params(fc) > 0.9 * hw ** 2 * head_params(cv)
    assert count_params(fc) > count_params(cv)


@pytest.mark.parametrize("size", SIZES)
def test_flops(size):
    for name in MODELS.names():
        assert flops_per_image(small(name, size), size) > 0
    # C5: stride-1 conv + pool (and upsample + conv) evaluate each kernel at ~4x more positions
    paper = MODELS.build("paper", {"image_size": size})
    pool = MODELS.build("maxpool", {"image_size": size})
    assert flops_per_image(pool, size) > 2 * flops_per_image(paper, size)
    assert paper.training                                 # flops_per_image restores the mode


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", MODELS.names())
def test_a_training_step_counts_three_forward_passes_but_the_first_layers_input_gradient(name, size):
    """Backward = gradients w.r.t. activations and weights (2 x forward), except the first conv's
    input gradient: the batch needs none, so no step computes it and MFU does not count it."""
    model = small(name, size)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    hook = first.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    fwd = flops_per_image(model, size)
    hook.remove()
    with FlopCounterMode(display=False) as c:
        first(torch.zeros(seen[0]))
    state = torch.get_rng_state()
    assert train_flops_per_image(model, size) == 3 * fwd - c.get_total_flops()
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), state)        # scoring after it draws the same numbers
