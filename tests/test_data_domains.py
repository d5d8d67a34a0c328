"""The image-to-image data sets of genkernels.data: paired, unpaired and multi-domain digits / photos."""
import pytest
import torch
import torch.nn.functional as F

from genkernels import data

SETS = {"digits_thick": ("image", "target"), "photos_gray": ("image", "target"),
        "digits_inverted": ("image", "image_b"), "photos_unpaired": ("image", "image_b"),
        "digits_domains": ("image",)}


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_ranges_and_determinism(name, split):
    d = data.load(name, split, 16)
    n = data.num_rows(d)
    assert n > 100
    for key in SETS[name]:
        x = d[key]
        assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[0] == n and x.shape[-2:] == (16, 16)
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    again = data.DATASETS[name](split, 16)                  # a fresh build, not the cache
    for key, value in d.items():
        assert torch.equal(value, again[key]), key


def test_digits_thick_target_is_a_dilation_of_the_input():
    d = data.load("digits_thick", "test", 32)
    x, y = d["image"], d["target"]
    assert torch.equal(y, F.max_pool2d(x, 3, stride=1, padding=1))
    ink = lambda t: (t > 0).float().mean().item()          # noqa: E731
    assert ink(y) > 1.3 * ink(x)
    assert torch.equal(d["label"], data.load("digits", "test", 32)["label"])


def test_photos_gray_is_the_luma_of_the_target():
    d = data.load("photos_gray", "train", 16)
    assert d["image"].shape[1] == 1 and d["target"].shape[1] == 3
    luma = 0.299 * d["target"][:, 0] + 0.587 * d["target"][:, 1] + 0.114 * d["target"][:, 2]
    torch.testing.assert_close(d["image"][:, 0], luma)


def test_unpaired_digits_are_inverted_rows_in_another_order():
    d = data.load("digits_inverted", "train", 16)
    a, b = d["image"], d["image_b"]
    digits = data.load("digits", "train", 16)
    assert torch.equal(a, digits["image"])
    # every B image is the negative of some A image, but not of the one in its own row
    flat_a, flat_b = a.flatten(1), (-b).flatten(1)
    match = torch.cdist(flat_b, flat_a).argmin(1)
    assert torch.equal(flat_a[match], flat_b)
    assert (match != torch.arange(len(a))).float().mean() > 0.99
    assert torch.equal(d["label_b"], digits["label"][match])
    assert (b.mean(dim=(1, 2, 3)) > 0).all() and (a.mean(dim=(1, 2, 3)) < 0).all()   # light vs dark ground


def test_unpaired_photos_come_from_the_two_photographs():
    d = data.load("photos_unpaired", "test", 16)
    crops = data.load("photos", "test", 16)
    china, flower = crops["image"][crops["label"] == 0], crops["image"][crops["label"] == 1]
    assert torch.equal(d["image"], china[: len(d["image"])])
    assert torch.equal(d["image_b"].flatten(1).sort(0).values, flower[: len(d["image_b"])].flatten(1).sort(0).values)


def test_digits_domains_attributes_show_in_the_images():
    d = data.load("digits_domains", "train", 32)
    x, dom = d["image"], d["domain"]
    assert dom.shape == (len(x), len(data.DOMAIN_ATTRIBUTES)) and set(dom.unique().tolist()) == {0.0, 1.0}
    assert ((dom.mean(0) - 0.5).abs() < 0.05).all()                      # each attribute on half the time
    thick, red, slanted = dom.bool().unbind(1)
    assert (x[red][:, 1:] == -1).all()                                  # red strokes: no green or blue
    assert torch.equal(x[~red][:, 0], x[~red][:, 1]) and torch.equal(x[~red][:, 0], x[~red][:, 2])
    ink = (x[:, 0] > 0).float().mean(dim=(1, 2))
    assert ink[thick].mean() > 1.3 * ink[~thick].mean()
    # slanted digits lean right: ink in the top half sits further right than in the bottom half
    cols = torch.arange(32.0)
    w = (x[:, 0] + 1) / 2

    def lean(rows):
        top, bottom = w[rows, :16], w[rows, 16:]
        centre = lambda t: (t.sum(1) * cols).sum(1) / t.sum(dim=(1, 2))   # noqa: E731
        return (centre(top) - centre(bottom)).mean()
    assert lean(slanted) > lean(~slanted) + 1.0


def test_bad_split_is_a_value_error():
    with pytest.raises(ValueError, match="split"):
        data.load("digits_domains", "validation", 16)
