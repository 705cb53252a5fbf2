"""Fake of Forge 2.x backend/nn/cnets (ControlNet and T2I-Adapter models)."""
