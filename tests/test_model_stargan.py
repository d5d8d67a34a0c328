"""StarGAN's mechanisms: the classifier head learns real domains, the generator aims at target domains,
n_critic = 5, the domain vector tiled over the image."""
import pytest
import torch

from genkernels import data, models
from genkernels.models.stargan import _cls_loss


def _setup(**overrides):
    torch.manual_seed(0)
    model = models.build("stargan", "tiny", **overrides)
    batch = data.get_batch(data.load("digits_domains", "train", 16), 8, 0)
    return model, batch


def test_classification_head_is_trained_on_real_images_and_their_domains():
    model, batch = _setup()
    head = model.discriminator.conv_cls.weight
    loss, _ = model(batch, "d", 0)
    (grad_model,) = torch.autograd.grad(loss, head)
    # the adversarial and gradient-penalty terms never reach the head: its gradient is lambda_cls times
    # that of the classification loss on the real batch with its real domains
    (grad_real,) = torch.autograd.grad(_cls_loss(model.discriminator(batch["image"])[1], batch["domain"]), head)
    torch.testing.assert_close(grad_model, model.config.lambda_cls * grad_real)
    shuffled = batch["domain"].roll(1, 0)
    assert not torch.equal(shuffled, batch["domain"])
    (grad_wrong,) = torch.autograd.grad(_cls_loss(model.discriminator(batch["image"])[1], shuffled), head)
    assert not torch.allclose(grad_model, grad_wrong)


def test_generator_is_trained_on_target_domains():
    model, batch = _setup(lambda_rec=0.0)
    torch.manual_seed(123)
    loss, logs = model(batch, "g", 0)
    torch.manual_seed(123)                                      # the same draw of target domains
    target = model.target_domains(batch["domain"])
    assert not torch.equal(target, batch["domain"])
    fake = model.generator(batch["image"], target)
    src, cls = model.discriminator(fake)
    torch.testing.assert_close(logs["g_cls"], _cls_loss(cls, target))
    torch.testing.assert_close(loss, -src.mean() + model.config.lambda_cls * _cls_loss(cls, target))
    assert not torch.allclose(logs["g_cls"], _cls_loss(cls, batch["domain"]))
    loss.backward()
    assert all(p.grad is None for p in model.discriminator.parameters())   # the critic is frozen in "g"
    # and the reconstruction goes back to the original domains: G(G(x, c_trg), c_org)
    model2, batch = _setup()
    torch.manual_seed(123)
    _, logs = model2(batch, "g", 0)
    rec = model2.generator(model2.generator(batch["image"], target), batch["domain"])
    torch.testing.assert_close(logs["rec"], (rec - batch["image"]).abs().mean())


def test_n_critic_and_domain_conditioning():
    model = models.build("stargan", "tiny", n_critic=5)
    assert [len(model.phases(s)) for s in range(10)] == [1, 1, 1, 1, 2, 1, 1, 1, 1, 2]
    assert model.phases(4) == ("d", "g")
    assert model.generator.main[0].in_channels == 3 + 3                # image ++ tiled domain vector
    x = torch.randn(2, 3, 16, 16)
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert not torch.allclose(model.generator(x, a), model.generator(x, b))
    assert model.domains().tolist()[5] == [1.0, 0.0, 1.0]


def test_authors_sizes_and_errors():
    # the parameter counts the authors' code prints (CelebA: 5 attributes, 128x128)
    model = models.build("stargan", "paper", c_dim=5)
    count = lambda m: sum(p.numel() for p in m.parameters())        # noqa: E731
    assert count(model.generator) == 8430528 and count(model.discriminator) == 44762048
    with pytest.raises(ValueError, match="image_size"):
        models.build("stargan", "tiny", image_size=20)
    with pytest.raises(ValueError, match="domain"):
        models.build("stargan", "tiny").generate(2, torch.Generator(), domain="12")
