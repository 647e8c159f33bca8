"""Probabilities that mean what they say: temperature scaling and how calibrated a model is.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides the
logits by one number T, fitted on held-out images by minimising the negative log-likelihood. It
never changes which digit wins, only how sure the model says it is. T is folded into the last
Dense layer, since softmax((W x + b) / T) == softmax((W / T) x + b / T), so the saved model, its
LiteRT export and anything else that loads it give calibrated probabilities with no extra step.

ECE (expected calibration error) is the gap between confidence and accuracy, averaged over 15
equal-width confidence bins weighted by how many images fall in each.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
LOG_T_RANGE = (math.log(0.05), math.log(20.0))  # T beyond these only chases a few images
SEARCH_STEPS = 80  # golden-section steps: the interval shrinks to ~1e-16 of its width


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = np.asarray(logits, np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def logits_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature)."""
    picked = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-np.mean(picked[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) on these images.

    The NLL is convex in 1/T, so a golden-section search over log T finds the minimum. A weak
    log-normal prior on T (sigma 1, centred on 1) adds (log T)^2 / 2 to the summed NLL: nothing
    next to 5,000 validation images, but a handful that are all right no longer send T to 0.

    Args:
      logits: (N, 10) pre-softmax outputs.
      labels: (N,) true digits.

    Returns:
      T > 0; 1.0 for no images.
    """
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0

    def objective(log_t: float) -> float:
        return logits_nll(logits, labels, math.exp(log_t)) + log_t ** 2 / (2 * len(labels))

    low, high = LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = objective(a), objective(b)
    for _ in range(SEARCH_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = objective(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = objective(b)
    return math.exp((low + high) / 2)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share."""
    rows = reliability(probabilities, labels, bins)
    total = sum(row["images"] for row in rows)
    if total == 0:
        return 0.0
    return float(sum(row["images"] * abs(row["accuracy"] - row["confidence"])
                     for row in rows) / total)


def reliability(probabilities: np.ndarray, labels: np.ndarray,
                bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin ((lo, hi], the first one [0, hi]): images, mean confidence, accuracy."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == np.asarray(labels) if len(probabilities) else \
        np.zeros(0, bool)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for index in range(bins):
        members = which == index
        count = int(members.sum())
        rows.append({"low": index / bins, "high": (index + 1) / bins, "images": count,
                     "confidence": float(confidence[members].mean()) if count else 0.0,
                     "accuracy": float(correct[members].mean()) if count else 0.0})
    return rows


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (probabilities clipped at 1e-12)."""
    picked = np.asarray(probabilities, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))) if len(labels) else 0.0


def calibration_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """ECE, NLL and the median top probability of the correctly classified images."""
    probabilities = np.asarray(probabilities, np.float64)
    correct = probabilities.argmax(axis=1) == labels
    top = probabilities.max(axis=1)
    return {"ece": expected_calibration_error(probabilities, labels),
            "nll": nll(probabilities, labels),
            "median_confidence_correct": float(np.median(top[correct])) if correct.any() else 0.0}


def uncalibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities a model folded with `temperature` gave before it was: softmax(T log p)."""
    logs = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-300, 1.0))
    return softmax(logs * temperature)


# ---- the Keras model ----------------------------------------------------------------------------


def model_logits(model, images: np.ndarray) -> np.ndarray:
    """The last Dense layer's pre-softmax outputs (N, 10) for uint8 or model-ready images."""
    import keras

    from digitnet.data import forward

    last = model.layers[-1]
    features = keras.Model(model.inputs, last.input)
    kernel, bias = (np.asarray(w, np.float64) for w in last.get_weights())
    # in float64 a chunk at a time: only the logits are kept, not every image's features
    return forward(features, images, lambda inputs: np.asarray(inputs, np.float64) @ kernel + bias)


def fold_temperature(model, temperature: float) -> None:
    """Divide the last Dense layer's kernel and bias by `temperature`, in place."""
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel / np.float32(temperature), bias / np.float32(temperature)])


def calibrate_model(model, validation: tuple, test: tuple) -> dict:
    """Fit T on the validation images, fold it into `model` and score both splits before/after.

    Args:
      model: the trained Keras model; its last Dense layer is changed in place.
      validation: (images, labels) that T is fitted on; uint8 or model-ready images.
      test: (images, labels), scored only.

    Returns:
      {"temperature": T, "bins": 15, "val": {...}, "test": {...}}, each split with its
      ece, nll and median_confidence_correct before and after.
    """
    logits = {name: (model_logits(model, images), labels)
              for name, (images, labels) in (("val", validation), ("test", test))}
    temperature = fit_temperature(*logits["val"]) if np.isfinite(logits["val"][0]).all() else 1.0
    report = {"temperature": temperature, "bins": ECE_BINS}
    for name, (values, labels) in logits.items():
        before = calibration_scores(softmax(values), labels)
        after = calibration_scores(softmax(values / temperature), labels)
        report[name] = {f"{key}_{when}": round(score[key], 6)
                        for when, score in (("before", before), ("after", after))
                        for key in score}
    fold_temperature(model, temperature)
    return report
