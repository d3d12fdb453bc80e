"""Primitives: each op defined once (meta rule, kernels by dispatch, declared dtypes)."""
