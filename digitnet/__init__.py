"""digitnet: train, evaluate and use handwritten-digit classifiers (Keras 3)."""

__version__ = "0.1.0"
