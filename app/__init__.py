"""sam-inspect application: CLI, batch, measurements, GUI, reports."""

__version__ = "0.1.0"
