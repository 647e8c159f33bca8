"""Using a trained model: load it, predict images."""

# Below this (calibrated) probability the answer is "unknown". Chosen with bench/real_images.py
# (docs/predict.md, "Saying I don't know") for models trained with outlier exposure: the default
# refuses about 4 in 5 generated non-digits and 2-3% of real digits. Here, not in predict.py,
# so that the CLI shows it in --help without importing numpy.
DEFAULT_MIN_CONFIDENCE = 0.65
