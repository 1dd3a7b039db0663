"""Core facts: the graph contract, model metadata, typed config, errors. Imports nothing above it."""
