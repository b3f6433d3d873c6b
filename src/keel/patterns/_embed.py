"""Vector helpers of the routers and tool selection. The Embedder seam and its default,
:class:`~keel.models.WordLlamaEmbedder`, live in ``keel.models`` (L1) so that the layers
below patterns can embed text too; they are re-exported here unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from keel.core import UserError
from keel.models import Embedder, WordLlamaEmbedder

__all__ = ["Embedder", "Vectors", "WordLlamaEmbedder", "embed_checked", "normalised"]

Vectors = npt.NDArray[np.float32]


def normalised(vectors: Vectors) -> Vectors:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (vectors / norms).astype(np.float32)
    return out


def embed_checked(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """Call the embedder and check its answer's shape: one finite row per text."""
    out = np.asarray(embedder.embed(texts), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(texts):
        raise UserError(f"embedder {embedder!r} returned shape {out.shape} for {len(texts)} "
                        "texts; it must return one row per text")
    if not np.isfinite(out).all():
        raise UserError(f"embedder {embedder!r} returned non-finite values")
    return out
