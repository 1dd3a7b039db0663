"""SYNTHETIC C-NMC-like cells and data sets (pipeline tests and demos only)."""
