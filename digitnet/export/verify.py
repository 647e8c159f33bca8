"""Check an export against the Keras model it came from, on the run's test images.

Float exports must give the same probabilities within PARITY and the same digit, except on a
near-tie (top two within 2 * PARITY: each side may move PARITY, so either digit may win). An int8
export must stay within INT8_MAX_ACCURACY_DROP of the float model's test accuracy and be at most
INT8_MAX_SIZE_SHARE of the float LiteRT file.
"""

from __future__ import annotations

import numpy as np

from digitnet.errors import DigitnetError

PARITY = 1e-5  # float exports and Keras agree this closely on every probability (issue 15)
INT8_MAX_ACCURACY_DROP = 0.002  # int8 test accuracy at most 0.2 points below the float model's
INT8_MAX_SIZE_SHARE = 0.30  # the int8 file at most 30% of the float LiteRT file


class VerificationError(DigitnetError):
    """An export differs from its Keras model; the message says how, in one line."""


def tied(probabilities: np.ndarray) -> np.ndarray:
    """Images whose top two are within 2 * PARITY: each may move PARITY, so either may win."""
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0] <= 2 * PARITY


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def check_float(reference: np.ndarray, exported: np.ndarray) -> dict:
    """The agreement of a float export with Keras, or VerificationError saying where it fails.

    Args:
      reference: Keras' probabilities (N, 10).
      exported: the export's probabilities for the same images.

    Returns:
      {"max_abs_difference", "near_ties", "digits_differ_on_near_ties"} for the card.
    """
    if exported.shape != reference.shape:
        raise VerificationError(f"output shape {exported.shape}, Keras {reference.shape}")
    difference = np.abs(exported.astype(np.float64) - reference)
    worst = int(difference.max(axis=1).argmax())
    if not difference.max() <= PARITY:  # also catches NaN
        raise VerificationError(f"max |probability difference| {difference.max():.3g} > "
                                f"{PARITY:g} (test image {worst})")
    ties = tied(reference)
    differ = reference.argmax(axis=1) != exported.argmax(axis=1)
    if (differ & ~ties).any():
        image = int(np.flatnonzero(differ & ~ties)[0])
        raise VerificationError(f"test image {image}: Keras says {reference[image].argmax()}, "
                                f"the export says {exported[image].argmax()} (not a near-tie)")
    return {"max_abs_difference": float(difference.max()), "near_ties": int(ties.sum()),
            "digits_differ_on_near_ties": int(differ.sum())}


def check_int8(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray, size: int,
               float_size: int) -> dict:
    """The int8 export's accuracy and size against the float model, or VerificationError.

    Args:
      reference: Keras' probabilities (N, 10).
      exported: the int8 export's (dequantized) probabilities for the same images.
      labels: the true digits (N,).
      size: the int8 file's bytes.
      float_size: the float LiteRT file's bytes.

    Returns:
      {"accuracy_drop", "size_share_of_float"} for the card.
    """
    float_accuracy, int8_accuracy = accuracy(reference, labels), accuracy(exported, labels)
    drop = float_accuracy - int8_accuracy
    if drop > INT8_MAX_ACCURACY_DROP + 1e-9:
        raise VerificationError(f"test accuracy {int8_accuracy:.4f}, {100 * drop:.2f} points "
                                f"below the float model's {float_accuracy:.4f} (at most "
                                f"{100 * INT8_MAX_ACCURACY_DROP:.1f})")
    share = size / float_size
    if share > INT8_MAX_SIZE_SHARE:
        raise VerificationError(f"{size} bytes, {share:.0%} of the float LiteRT file's "
                                f"{float_size} (at most {INT8_MAX_SIZE_SHARE:.0%})")
    return {"accuracy_drop": drop,
            "size_share_of_float": share}
