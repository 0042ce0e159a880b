"""Instantiation, run bookkeeping and checkpoint helpers shared by the entry points."""
