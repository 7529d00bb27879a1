"""Shipped model checkpoints (the demo detector), installed as ``tal_pipeline.checkpoints``."""
