"""Trainer, checkpoints, metrics and plots, distributed set-up."""
