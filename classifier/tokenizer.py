"""A byte-level BPE tokenizer trained on the training corpus, wrapped as LayoutLMv3TokenizerFast
so it tokenizes words with their boxes and saves/loads like any transformers tokenizer."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, LayoutLMv3TokenizerFast, PreTrainedTokenizerBase

# Same order as RoBERTa/LayoutLMv3: <s>=0, <pad>=1, </s>=2 match LayoutLMv3Config's ids.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> LayoutLMv3TokenizerFast:
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = bpe.save_model(tmp)
        return LayoutLMv3TokenizerFast(vocab_file=vocab, merges_file=merges, add_prefix_space=True)


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved next to a backbone (our bundles or a LayoutLMv3 checkpoint)."""
    try:
        return LayoutLMv3TokenizerFast.from_pretrained(str(path))
    except (OSError, ValueError, TypeError):
        return AutoTokenizer.from_pretrained(str(path))
