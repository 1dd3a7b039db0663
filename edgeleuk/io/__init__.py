"""File I/O: images, folders, C-NMC layouts, atomic writes, CSV cells, model-file formats and metadata."""
