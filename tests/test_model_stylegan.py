"""StyleGAN's mechanisms: truncation, style mixing, the tracked w, lazy R1, path length through adain."""
import pytest
import torch

import genkernels
from genkernels.models import gan_layers, stylegan


def _model(**kw):
    torch.manual_seed(0)
    return stylegan.StyleGAN(stylegan.StyleGANConfig(**{**stylegan.StyleGAN.presets["tiny"], **kw}))


def _batch(n=4, size=8):
    return {"image": torch.randn(n, 1, size, size).clamp(-1, 1), "label": torch.zeros(n, dtype=torch.int64)}


def test_truncation_psi_zero_gives_one_image_for_every_z():
    m = _model()
    with torch.no_grad():
        m.generator.w_avg.normal_()
    for noise in ("const", "none"):
        x = m.generate(5, torch.Generator().manual_seed(0), truncation=0.0, noise=noise)
        assert torch.allclose(x, x[:1].expand_as(x), atol=1e-6)
        y = m.generate(5, torch.Generator().manual_seed(0), truncation=1.0, noise=noise)
        assert (y - y[:1]).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="truncation"):
        m.generate(2, torch.Generator(), truncation=1.5)


def test_every_layer_styles_through_the_adain_op_from_a_learned_constant(monkeypatch):
    """One adain call per synthesis layer (the constant's and one after every convolution), each with the
    scale and bias of that layer's own w; the 4x4 constant is a trained parameter; the paper's defaults."""
    m = _model()
    synth = m.generator.synthesis
    calls = []

    def counting(x, scale, bias, *args, **kw):
        calls.append((x.shape, scale.detach().clone()))
        return genkernels.adain(x, scale, bias, *args, **kw)
    monkeypatch.setattr(gan_layers, "adain", counting)
    ws = torch.randn(2, synth.num_ws, 16)                       # a different w for every layer
    synth(ws, "none").sum().backward()
    assert len(calls) == synth.num_ws == 2 * len(m.config.channels)
    assert [c[0][-1] for c in calls] == [4, 4, 8, 8]             # the constant's layer and each conv's
    for i, (layer, (_, scale)) in enumerate(zip(synth.layers, calls)):
        torch.testing.assert_close(scale, layer.style.affine(ws[:, i]).chunk(2, dim=1)[0])
    assert isinstance(synth.const, torch.nn.Parameter) and synth.const.grad.abs().sum() > 0
    assert sum(layer.conv is not None for layer in synth.layers) == synth.num_ws - 1
    paper = stylegan.StyleGANConfig(**stylegan.StyleGAN.presets["paper"])
    assert (paper.mapping_layers, paper.mapping_lr_mul, paper.r1_interval) == (8, 0.01, 16)


def test_truncation_interpolates_w_towards_the_average():
    m = _model()
    G = m.generator
    with torch.no_grad():
        G.w_avg.normal_()
    z = torch.randn(3, 16)
    ws = G.ws(z, 0.3)
    assert ws.shape == (3, G.synthesis.num_ws, 16)
    torch.testing.assert_close(ws[:, 0], G.w_avg + 0.3 * (G.mapping(z) - G.w_avg))


def test_mapping_has_pixel_norm_and_lr_multiplier():
    m = _model()
    layer = m.generator.mapping.layers[0]
    assert layer.lr_mul == 0.01
    z = torch.randn(2, 16)
    torch.testing.assert_close(m.generator.mapping(z), m.generator.mapping(5 * z))   # pixel norm first


def test_style_mixing_uses_a_second_w_after_the_crossover():
    m = _model(style_mixing_prob=1.0)
    torch.manual_seed(3)
    ws = m.mixed_ws(4)
    first_layer = ws[:, :1]
    assert torch.equal(ws[:, 0], first_layer[:, 0])
    changes = [not torch.equal(ws[:, i], ws[:, 0]) for i in range(ws.shape[1])]
    assert not changes[0] and any(changes)
    k = changes.index(True)                       # all later layers share the second w
    assert all(torch.equal(ws[:, i], ws[:, k]) for i in range(k, ws.shape[1]))
    assert all(not c for c in changes[:k])
    ws_plain = _model(style_mixing_prob=0.0).mixed_ws(4)
    assert all(torch.equal(ws_plain[:, i], ws_plain[:, 0]) for i in range(ws_plain.shape[1]))


def test_w_avg_tracks_the_mapping_output_in_the_generator_phase():
    m = _model()
    assert m.generator.w_avg.abs().sum() == 0
    m(_batch(), "g", step=1)
    assert m.generator.w_avg.abs().sum() > 0


def test_lazy_r1_and_path_length_steps():
    m = _model(r1_interval=3, pl_interval=2)
    assert "r1" in m(_batch(), "d", step=3)[1] and "r1" not in m(_batch(), "d", step=4)[1]
    assert "pl" in m(_batch(), "g", step=2)[1] and "pl" not in m(_batch(), "g", step=3)[1]
    opt = m.optimizers()["d"]
    assert opt.param_groups[0]["lr"] == pytest.approx(m.config.lr * 3 / 4)
    assert opt.param_groups[0]["betas"][1] == pytest.approx(0.99 ** 0.75)


def test_path_length_double_backward_fused_equals_reference():
    """The path-length penalty differentiates a gradient of the synthesis network, i.e. adain's double
    backward; fused and reference backends give the same penalty and parameter gradients."""
    grads = {}
    for backend in ("reference", "auto"):
        m = _model().double()
        with genkernels.use_backend(backend):
            torch.manual_seed(5)
            pl, length = m.path_length_penalty(3, step=0)
            torch.manual_seed(5)
            pl, _ = m.path_length_penalty(3, step=1)   # against the mean that includes step 0
            pl.backward()
        grads[backend] = {n: p.grad.clone() for n, p in m.generator.named_parameters() if p.grad is not None}
        assert pl.item() > 0
    assert grads["reference"].keys() == grads["auto"].keys()
    assert any("style.affine" in n for n in grads["auto"])
    for n in grads["reference"]:
        torch.testing.assert_close(grads["auto"][n], grads["reference"][n], msg=n)


def test_noise_inputs_have_learned_per_channel_scales():
    m = _model()
    layer = m.generator.synthesis.layers[1]
    assert layer.noise.weight.shape == (1, layer.bias.shape[1], 1, 1)
    g = torch.Generator().manual_seed(0)
    a = m.generate(2, torch.Generator().manual_seed(0), truncation=1.0, noise="random")
    b = m.generate(2, g, truncation=1.0, noise="none")
    torch.testing.assert_close(a, b)                 # scales start at zero
    with torch.no_grad():
        for l in m.generator.synthesis.layers:
            l.noise.weight.fill_(0.5)
    c = m.generate(2, torch.Generator().manual_seed(0), truncation=1.0, noise="random")
    assert not torch.allclose(a, c)


def test_path_length_target_is_the_mean_of_earlier_steps():
    m = _model(pl_decay=0.5)
    torch.manual_seed(0)
    pl0, len0 = m.path_length_penalty(2, step=0)
    assert m.pl_mean.item() == 0 and pl0.item() > 0               # nothing earlier: target 0
    torch.manual_seed(0)
    again, _ = m.path_length_penalty(2, step=0)                   # the same step evaluated again
    torch.testing.assert_close(again, pl0)
    torch.manual_seed(1)
    m.path_length_penalty(2, step=4)
    assert m.pl_mean.item() == pytest.approx(0.5 * len0.item(), rel=1e-5)
