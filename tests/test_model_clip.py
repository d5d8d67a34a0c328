"""CLIP text encoder (genkernels/models/clip.py) against transformers' CLIPTextModel, and the offline
tokenizers (genkernels/models/tokenizer.py)."""
import json

import pytest
import torch

import genkernels
import genkernels.models
from genkernels import data
from genkernels.models.clip import CLIPTextConfig, CLIPTextEncoder, load_clip_text_encoder
from genkernels.models.tokenizer import CLIPBPETokenizer, WordTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")


def tiny_hf(act="quick_gelu", eos=2, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(vocab_size=50, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=16, hidden_act=act,
                                      eos_token_id=eos, bos_token_id=0, pad_token_id=1)
    return transformers.CLIPTextModel(cfg).eval()


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("act,eos", [("quick_gelu", 2), ("gelu", 7)])
def test_matches_transformers(backend, act, eos):
    hf = tiny_hf(act, eos)
    ours = load_clip_text_encoder(hf).eval()
    ids = torch.randint(0, 50, (3, 11), generator=torch.Generator().manual_seed(1))
    ids[:, 6] = eos
    with torch.no_grad(), genkernels.use_backend(backend):
        expect = hf(input_ids=ids)
        got = ours(ids)
        torch.testing.assert_close(got.last_hidden_state, expect.last_hidden_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.pooler_output, expect.pooler_output, atol=1e-5, rtol=1e-5)
        # a padding mask (trailing padding, as a padded batch)
        am = torch.ones_like(ids)
        am[1, 8:] = 0
        torch.testing.assert_close(ours(ids, am).last_hidden_state,
                                   hf(input_ids=ids, attention_mask=am).last_hidden_state, atol=1e-5, rtol=1e-5)
    # the causal mask matters: a later token never changes an earlier state
    ids2 = ids.clone()
    ids2[:, 9] = (ids2[:, 9] + 1) % 50
    with torch.no_grad():
        a, b = ours(ids).last_hidden_state, ours(ids2).last_hidden_state
    assert torch.equal(a[:, :9], b[:, :9]) and not torch.allclose(a[:, 9:], b[:, 9:])


def test_load_state_dict_and_config_and_gradients():
    hf = tiny_hf()
    sd = {"text_model." + k: v for k, v in hf.state_dict().items()}  # older checkpoints' prefix
    ours = genkernels.models.load_clip_text_encoder(sd, hf.config.to_dict())   # the package-level loader
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, hf(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
    # gradients equal transformers' (a weighted loss: a plain sum after the final LayerNorm with weight 1
    # has a zero gradient, so its computed value is rounding noise)
    w = torch.randn(2, 7, hf.config.hidden_size, generator=torch.Generator().manual_seed(3))
    (ours(ids).last_hidden_state * w).sum().backward()
    (hf(input_ids=ids).last_hidden_state * w).sum().backward()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        g = getattr(ours.encoder.layers[0].self_attn, name).weight.grad
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, getattr(hf.encoder.layers[0].self_attn, name).weight.grad,
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="needs its `config`"):
        load_clip_text_encoder(sd)
    with pytest.raises(ValueError, match="this encoder takes 1..16"):
        ours(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        CLIPTextConfig(hidden_size=30, num_attention_heads=4)


def test_word_tokenizer_truncates_as_clip():
    tok = WordTokenizer(context_length=6)
    ids = tok(["a handwritten seven", "a handwritten one two three four five"])
    V = data.VOCAB.index
    assert ids[0].tolist() == [V("<bos>"), V("a"), V("handwritten"), V("seven"), V("<eos>"), V("<pad>")]
    # longer than the context: the first 4 words, then eos last
    assert ids[1].tolist() == [V("<bos>"), V("a"), V("handwritten"), V("one"), V("two"), V("<eos>")]
    assert load_tokenizer().context_length == data.TOKEN_LENGTH
    enc = CLIPTextEncoder(CLIPTextConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=6))
    assert enc(ids).last_hidden_state.shape == (2, 6, 16)


def write_tiny_bpe(path):
    """A CLIP BPE vocabulary of single letters (+ one merge, "h a") as vocab.json / merges.txt in `path`."""
    vocab = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["ha"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\nh a\n")
    return vocab


def test_clip_bpe_tokenizer_from_local_files(tmp_path):
    vocab = write_tiny_bpe(tmp_path)
    tok = load_tokenizer(str(tmp_path), context_length=8)
    assert isinstance(tok, CLIPBPETokenizer)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    short, long = tok(["ab", "abcdefghij"]).tolist()
    assert short == [bos, vocab["a"], vocab["b</w>"], eos, eos, eos, eos, eos]  # padded with eos (CLIP's pad)
    assert long == [bos] + [vocab[c] for c in "abcdef"] + [eos]  # truncated: 6 tokens, eos kept last
    with pytest.raises(ValueError, match="vocab_file"):
        load_tokenizer(str(tmp_path / "missing"))
