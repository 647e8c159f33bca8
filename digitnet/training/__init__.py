"""Training a model: the loop, its callbacks, checkpoints and resume."""
