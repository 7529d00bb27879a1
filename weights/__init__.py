"""Shipped model checkpoints (the demo detector). Installed as ``tal_pipeline.weights``."""
