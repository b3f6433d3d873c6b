"""keel's public test kit: scripted models (more arrives as the kit grows)."""

from keel.models import FunctionModel, ScriptedModel, call

__all__ = ["FunctionModel", "ScriptedModel", "call"]
