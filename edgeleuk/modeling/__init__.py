"""The torch side: the network, weights, checkpoints, TTA module and the eager reference."""
