"""Triton reduction kernels (being written)."""
