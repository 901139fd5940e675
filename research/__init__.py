"""Trellis: one functional, sharded training loop for language models."""
