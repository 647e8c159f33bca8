"""Exporting a trained model to other runtimes."""
