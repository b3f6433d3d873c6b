"""L1: the Model seam, provider adapters, id resolution and provider facts."""

from keel.models._base import Model, response_as_deltas
from keel.models._embed import Embedder, WordLlamaEmbedder
from keel.models._info import ModelInfo, model_info, register_model_info
from keel.models._registry import ModelId, parse_model_id, resolve_model
from keel.models._scripted import FunctionModel, ScriptedModel, ScriptItem, call

__all__ = [
    "Embedder",
    "FunctionModel",
    "Model",
    "ModelId",
    "ModelInfo",
    "ScriptItem",
    "ScriptedModel",
    "WordLlamaEmbedder",
    "call",
    "model_info",
    "parse_model_id",
    "register_model_info",
    "resolve_model",
    "response_as_deltas",
]
