"""Scoring a model, drawing its plots and writing its report page."""

SPLITS = ("test", "val")  # the images a model is scored on: MNIST's test set, or the run's val
