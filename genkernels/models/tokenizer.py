"""Text tokenizers for the text-conditioned models, offline.

    tok = load_tokenizer(context_length=8)          # word level, genkernels.data.VOCAB (the shipped captions)
    tok = load_tokenizer("sd15/tokenizer")          # CLIP's BPE from a local vocab.json + merges.txt
    ids = tok(["a handwritten seven"])              # int64 [1, context_length]

Both tokenize as CLIP does: ``bos, tokens, eos`` then padding up to ``context_length``; a prompt longer
than the context is truncated to its first ``context_length - 2`` tokens, ``eos`` kept last.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch

from .. import data

Tensor = torch.Tensor


def _texts(texts: Union[str, Sequence[str]]):
    if isinstance(texts, str):
        return [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("prompts must be strings")
    return list(texts)


class WordTokenizer:
    """Whole words of ``genkernels.data.VOCAB`` (unknown words -> ``<unk>``, padding ``<pad>`` = 0)."""

    def __init__(self, context_length: int = data.TOKEN_LENGTH):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        self.context_length = context_length
        self.vocab_size = len(data.VOCAB)
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (data.VOCAB.index(t) for t in
                                                                   ("<bos>", "<eos>", "<pad>"))

    def __call__(self, texts: Union[str, Sequence[str]]) -> Tensor:
        return data.tokenize(_texts(texts), self.context_length)


class CLIPBPETokenizer:
    """transformers' CLIPTokenizer on local ``vocab.json`` and ``merges.txt`` (as in a diffusers
    pipeline's ``tokenizer/`` folder), padded to ``context_length`` with its pad token."""

    def __init__(self, vocab_file: str, merges_file: str, context_length: int = 77):
        from transformers import CLIPTokenizer
        for name, path in (("vocab_file", vocab_file), ("merges_file", merges_file)):
            if not os.path.isfile(path):
                raise ValueError(f"{name}: no such file {path!r}")
        self.tok = CLIPTokenizer(vocab_file, merges_file)
        self.context_length = context_length
        self.vocab_size = len(self.tok)
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (self.tok.bos_token_id, self.tok.eos_token_id,
                                                                   self.tok.pad_token_id)

    def __call__(self, texts: Union[str, Sequence[str]]) -> Tensor:
        return self.tok(_texts(texts), padding="max_length", max_length=self.context_length, truncation=True,
                        return_tensors="pt").input_ids


def load_tokenizer(path: Optional[str] = None, context_length: Optional[int] = None):
    """The word tokenizer when ``path`` is None, else CLIP's BPE from the folder ``path`` (vocab.json,
    merges.txt). context_length: 8 (word) or 77 (CLIP) by default."""
    if path is None:
        return WordTokenizer(context_length or data.TOKEN_LENGTH)
    return CLIPBPETokenizer(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"),
                            context_length or 77)
