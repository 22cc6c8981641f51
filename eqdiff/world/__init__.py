"""The procedural world: captioned images drawn in code, a base model trained on them from scratch, and
world-native evaluators (docs/world.md)."""
