"""dimgpt: train a small French chat language model (DimensionGPT class) from scratch, and use it."""

__version__ = "0.1.0"
