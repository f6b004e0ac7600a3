"""The transformer, its attention backends and weight loading."""
