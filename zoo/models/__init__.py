"""Encoder architectures. Each module registers its presets in ``zoo.registry``."""
