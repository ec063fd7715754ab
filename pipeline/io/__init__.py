"""The ground layer: files (atomic writes, digests, shared-data paths), pretrained-weight lookup, compute
precision, image and video I/O, training-run files, and the save/load idiom of every model. Imports nothing
else of the project (``docs/architecture.md``)."""
