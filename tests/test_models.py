"""ConvVAE and its registered variants: shapes, exact size bookkeeping, determinism, cost."""
import itertools

import pytest
import torch

from bench.errors import ConfigError
from models import MODELS, VAEOutput
from models.blocks import down_size
from models.conv import LOGVAR_MAX, ConvVAE, count_params, flops_per_image

SIZES = [32, 96]
SMALL = {32: [8, 16, 16], 96: [8, 16, 16, 16]}   # tiny widths: fast; final map 2x2 / 4x4 (k4)
LATENT = 16                                      # divisible by every final map size above


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
    assert 0 <= out.recon.min() and out.recon.max() <= 1
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
    for kernel, down, up in itertools.product((3, 4), ("stride", "maxpool"), ("deconv", "upsample")):
        side = size
        for _ in widths:
            side = down_size(side, kernel, down)
        heads = "conv" if down == "maxpool" else "fc"       # conv heads: the latent map is resized
        model = ConvVAE(image_size=size, latent_dim=2 * side * side, widths=widths, kernel=kernel,
                        down=down, up=up, heads=heads).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, size, size))
        assert out.recon.shape == (1, 3, size, size), (kernel, down, up)


def test_paper_baseline_defaults_and_sizes():
    m32 = MODELS.build("paper", {"image_size": 32})
    assert m32.sizes == [32, 15, 6, 2] and m32.dec_sizes == m32.sizes
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
    assert m96.sizes == [96, 47, 22, 10, 4] and m96.latent_dim == 1024


def test_conv_factory_defaults_equal_paper():
    a, b = MODELS.build("conv", {"image_size": 32}), MODELS.build("paper", {"image_size": 32})
    assert count_params(a) == count_params(b)
    assert [tuple(p.shape) for p in a.parameters()] == [tuple(p.shape) for p in b.parameters()]


@pytest.mark.parametrize("name,size,widths", [("conv", 16, [8, 8, 8, 8]), ("paper", 8, None),
                                              ("maxpool", 16, [8, 8, 8])])
def test_too_small_image_is_a_config_error(name, size, widths):
    with pytest.raises(ConfigError, match=f"image_size {size} too small") as exc:
        MODELS.build(name, {"image_size": size, "widths": widths})
    assert exc.value.key == "widths" and "use fewer widths" in str(exc.value)


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
