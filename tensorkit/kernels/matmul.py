"""Triton matmul kernels (being written)."""
