"""The Embedder seam (one method: ``embed(texts) -> array``) and its default,
:class:`WordLlamaEmbedder`, which runs the WordLlama model shipped inside the ``wordllama``
package: offline, CPU only, ~20 µs per short text. Nothing is downloaded, ever.

It lives in L1 (next to the Model seam) so that every layer above can embed text: the
routers and tool selection of ``keel.patterns`` (L4) and the semantic cache of
``keel.observe`` (L3). numpy is imported on first use, never when keel is imported."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from keel.core import ConfigError, UserError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors: one row per text, any fixed width. Rows need not be
    normalised (the routers normalise them)."""

    def embed(self, texts: Sequence[str]) -> Vectors: ...


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int], Any] = {}


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Undo what an import does to the root logger (handlers and level): a library must not
    switch on INFO logging for the whole application."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _load(dim: int) -> Any:
    """The WordLlama model, loaded once per process from the installed package's own files."""
    try:
        with _root_logging_kept():  # wordllama calls logging.basicConfig(INFO) on import
            import wordllama
            from wordllama import WordLlama
    except ImportError as exc:
        raise UserError("the default embedder (WordLlama) needs the 'embed' extra: pip "
                        "install 'keel-agents[embed]' (or 'keel-agents[all]'); or pass "
                        "embedder= your own Embedder") from exc
    folder = os.path.dirname(wordllama.__file__)
    key = (folder, dim)
    model = _LOADED.get(key)
    if model is not None:
        return model
    with _LOCK:
        model = _LOADED.get(key)
        if model is None:
            try:
                model = WordLlama.load(cache_dir=folder, dim=dim, disable_download=True)
            except (FileNotFoundError, ValueError) as exc:
                raise UserError(f"the WordLlama weights (dim {dim}) are not in {folder}; "
                                "keel never downloads them. Reinstall wordllama or pass "
                                "embedder=") from exc
            _LOADED[key] = model
    return model


class WordLlamaEmbedder:
    """The default embedder: WordLlama ``l2_supercat`` (256 dimensions) from the installed
    ``wordllama`` package, loaded lazily on first use and shared by the whole process.
    ``dim`` may truncate the vectors (64, 128 or 256; smaller is faster, a little less exact)."""

    def __init__(self, *, dim: int = 256) -> None:
        if dim not in (64, 128, 256):
            raise ConfigError("dim", f"must be 64, 128 or 256, not {dim!r}")
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        import numpy as np

        model = _load(256)
        out = np.asarray(model.embed(list(texts)), dtype=np.float32)
        return out[:, : self.dim] if self.dim != 256 else out

    def __repr__(self) -> str:
        return f"<WordLlamaEmbedder dim={self.dim}>"
