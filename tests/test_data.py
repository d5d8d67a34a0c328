"""genkernels.data: the shipped data sets, the split, captions and the batch sequence."""
import pytest
import torch

from genkernels import data


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_shapes_range_split(size):
    tr, te = data.load("digits", "train", size), data.load("digits", "test", size)
    assert tr["image"].shape == (1438, 1, size, size) and te["image"].shape == (359, 1, size, size)
    assert tr["image"].dtype == torch.float32 and tr["label"].dtype == torch.int64
    for d in (tr, te):
        assert d["image"].min() == -1.0 and d["image"].max() == 1.0
        assert set(d["label"].tolist()) == set(range(10))
        assert d["tokens"].shape == (len(d["label"]), data.TOKEN_LENGTH)
    # every class is represented in both splits in roughly its share
    counts = torch.bincount(te["label"], minlength=10)
    assert counts.min() >= 20


def test_digits_split_disjoint_and_complete():
    from sklearn.datasets import load_digits
    raw = torch.from_numpy(load_digits().images).float().flatten(1) / 8 - 1
    tr, te = data.load("digits", "train", 8), data.load("digits", "test", 8)
    rows = lambda d: {tuple(r) for r in d["image"].flatten(1).tolist()}  # noqa: E731
    # the 8x8 images are the originals scaled to [-1, 1]; together the splits hold every one
    assert rows(tr) | rows(te) == {tuple(r) for r in raw.tolist()}
    assert len(tr["image"]) + len(te["image"]) == len(raw)


def test_deterministic_and_fresh():
    a, b = data.load("digits", "train", 16), data.load("digits", "train", 16)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    a["image"].zero_()   # callers own their tensors: the cache is not touched
    assert not torch.equal(a["image"], data.load("digits", "train", 16)["image"])


def test_upsampled_digit_keeps_its_picture():
    small, big = data.load("digits", "test", 8)["image"], data.load("digits", "test", 32)["image"]
    down = torch.nn.functional.avg_pool2d(big, 4)
    assert (down - small).abs().mean() < 0.15


def test_captions_and_tokens():
    assert data.caption(7) == "a handwritten seven"
    assert data.caption(0) == "a handwritten zero"
    with pytest.raises(ValueError, match="label"):
        data.caption(10)
    t = data.tokenize(["a handwritten seven", "a purple cow"], length=6)
    v = data.VOCAB.index
    assert t[0].tolist() == [v("<bos>"), v("a"), v("handwritten"), v("seven"), v("<eos>"), v("<pad>")]
    assert t[1].tolist()[2:4] == [v("<unk>"), v("<unk>")]
    d = data.load("digits", "test", 8)
    assert torch.equal(d["tokens"], data.tokenize([data.caption(int(c)) for c in d["label"]]))
    with pytest.raises(TypeError, match="texts"):
        data.tokenize("a handwritten one")


def test_photos():
    tr, te = data.load("photos", "train", 16), data.load("photos", "test", 24)
    assert tr["image"].shape == (1024, 3, 16, 16) and te["image"].shape == (256, 3, 24, 24)
    assert tr["image"].min() >= -1 and tr["image"].max() <= 1
    assert set(tr["label"].tolist()) == {0, 1}
    # crops differ from each other (random positions and sizes) and have real contrast
    assert tr["image"].flatten(1).std(1).mean() > 0.05
    assert len({tuple(x.flatten()[:16].tolist()) for x in tr["image"][:64]}) == 64
    assert torch.equal(tr["image"], data.load("photos", "train", 16)["image"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        data.load("nope")
    with pytest.raises(ValueError, match="split"):
        data.load("digits", "validation")
    with pytest.raises(ValueError, match="image_size"):
        data.load("digits", "train", 0)
    with pytest.raises(ValueError, match="divisible"):
        data.batch_indices(100, 10, 0, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        data.batch_indices(100, 10, 0, rank=2, world_size=2)


def test_batch_indices_epochs_and_shards():
    n, b = 10, 4
    seq = torch.cat([data.batch_indices(n, b, s, seed=3) for s in range(5)])   # 20 = two epochs
    assert sorted(seq[:10].tolist()) == list(range(n)) and sorted(seq[10:].tolist()) == list(range(n))
    assert not torch.equal(seq[:10], seq[10:])                                 # reshuffled per epoch
    for s in range(5):
        whole = data.batch_indices(n, b, s, seed=3)
        shards = [data.batch_indices(n, b, s, seed=3, rank=r, world_size=2) for r in range(2)]
        assert torch.equal(torch.cat(shards), whole)
    assert not torch.equal(data.batch_indices(n, b, 0, seed=3), data.batch_indices(n, b, 0, seed=4))
    d = data.load("digits", "test", 8)
    batch = data.get_batch(d, 16, 2, seed=1)
    idx = data.batch_indices(359, 16, 2, seed=1)
    assert torch.equal(batch["image"], d["image"][idx]) and torch.equal(batch["label"], d["label"][idx])
