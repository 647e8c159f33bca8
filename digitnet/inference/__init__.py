"""Using a trained model: load it, predict images."""

# Below this (calibrated) probability the answer is "unknown". Chosen with bench/real_images.py
# (docs/predict.md, "Saying I don't know") for models trained with outlier exposure: on images the
# threshold was not chosen on, the default refuses about 2-3% of real digits and 3 in 4 to 4 in 5
# generated non-digits, the CNN 2-5% and 94%. Here, not in predict.py, so that the CLI shows it
# in --help without importing numpy.
DEFAULT_MIN_CONFIDENCE = 0.55
