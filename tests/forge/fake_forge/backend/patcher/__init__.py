"""Fake of Forge 2.x backend/ (namespace packages there)."""
