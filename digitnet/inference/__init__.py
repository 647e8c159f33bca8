"""Using a trained model: load it, predict images."""

# When the answer is "unknown" (docs/predict.md, "Saying I don't know"); chosen with
# bench/real_images.py on generated sets the docs' table does not use (--seed 1, --seed 2), for
# models trained with outlier exposure. Here, not in predict.py, so that the CLI shows them in
# --help without importing numpy.
# Above this entropy of the ten (calibrated) probabilities, in nats, the answer is "unknown"
# (ln 10 = 2.30 is the most ten probabilities can have: a larger value never refuses). It
# separates digits from non-digits better than the top probability: the default models refuse
# 0-2% of digits and 80-84% of non-digits with it, the CNN 0.3-2% and 94%.
DEFAULT_MAX_ENTROPY = 1.3
# Below this top probability the answer is "unknown" too. At the default entropy it is a floor
# that changed no answer on the bench's sets: within 1.3 nats the top probability is below 0.4
# only when three digits share nearly all of it.
DEFAULT_MIN_CONFIDENCE = 0.4
