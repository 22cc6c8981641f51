"""Base models and concepts: the presets and their registry, ``load_components``, reading diffusers directories
and single-file checkpoints (with their key layout), precision and device policy, ``check-models``, and the
saved concept format.
"""
