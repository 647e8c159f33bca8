"""Using a trained model: load it, predict images."""
