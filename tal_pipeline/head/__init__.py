"""The detection head (TSA + TPP) and its losses; see ``model.py`` for the architecture."""

from tal_pipeline.head.model import HeadConfig, HeadModel, HeadOutputs

__all__ = ["HeadConfig", "HeadModel", "HeadOutputs"]
