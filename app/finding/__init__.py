"""Zero-click inspection in the product.

classes (which of the recipe's classes a run looks for; the message saying how to teach a class
nothing knows; no model imports, so the torch-free line tool uses it) and plan (which model
finds which class: a trained finder, a model taught by accepted examples, a golden-sample
anomaly model, each named or promoted in the tuned-model registry; running them on an image;
measured findings). Import from the modules; this package imports nothing itself, so the line
tool's import of `classes` reaches no model code.
"""
