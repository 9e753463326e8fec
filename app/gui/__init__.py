"""The inspector's desktop window (PySide6): `sam-inspect gui [FOLDER]`.

Modules without Qt (importable anywhere, tested without a display): options, images, session,
mask_geometry, autosave, export. Qt modules: canvas, workers, commands, annotator, folder_dock,
defect_panel, settings, about_dialog, main_window, main. No model code lives here: the GUI calls
sam_engine through worker threads only, so the encoder never runs on the UI thread.
"""
