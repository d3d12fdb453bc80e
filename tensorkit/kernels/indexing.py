"""Triton indexing kernels (being written)."""
