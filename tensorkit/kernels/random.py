"""Triton random kernels (being written)."""
