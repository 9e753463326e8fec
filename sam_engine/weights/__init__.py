"""Model weights: the manifest of known checkpoints, where installed ones are found,
downloads, checkpoint checks and file hashes.

May import: the standard library, numpy, sam_engine.errors; torch lazily (loading).
"""
