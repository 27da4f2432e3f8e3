"""Memorization tracking and plots."""
from .memorization import MEMO_COLUMNS, memorization_fractions

__all__ = ["MEMO_COLUMNS", "memorization_fractions"]
