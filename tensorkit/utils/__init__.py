"""Utilities around the core: ``tk.utils.data`` (datasets, samplers, DataLoader)."""
from . import data

__all__ = ["data"]
