"""Metrics and the parity comparison with the PyTorch original (numpy, torch-free)."""
