"""Files other programs read: atomic writes that honour the umask, mask label PNGs and
overlays, the one COCO writer.

May import: app.inspection, sam_engine.
"""
