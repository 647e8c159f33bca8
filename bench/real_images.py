"""Real-image accuracy, calibration and "I don't know", through digitnet's predict path.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/real_images.py \
        --model runs/default --model runs/cnn [--realdigits ../shared/data/realdigits-dev] \
        [--seed 0] [--choose-seeds 1 2]

Three sets of images, each turned into 28x28 inputs once by `preprocess_files` and answered by
every model exactly as `digitnet predict` answers them (the model-file gate, the LiteRT export,
`predict.answers` for "unknown"):

- real: the labelled photos, scans and canvas drawings of --realdigits (per style);
- rendered: MNIST *test* digits (other writers than training's) drawn on paper and photographed,
  or drawn on a canvas (bench/synthetic.py: pens, paper, light, perspective, blur, noise, JPEG);
- non-digits: letters, scribbles, shapes, blank and noise pages, photo-like scenes.

--seed makes the reported generated sets; --choose-seeds make other ones (other digits, other
non-digits) on which each score's threshold is chosen, so that no threshold is tuned on the
images it is reported on.

For each model: accuracy on real and rendered digits, their ECE (15 bins); the share of real
digits, rendered digits and non-digits answered "unknown" at the default rule and along each of
its two thresholds (--min-confidence, --max-entropy); and, side by side, several scores that
could decide "unknown", each at the threshold that refuses at most 3% of the real digits and
of the held-out rendered digits:

- top probability (calibrated; --min-confidence alone);
- entropy of the ten probabilities (--max-entropy alone);
- max-logit and energy (logsumexp of the logits; Hendrycks & Gimpel 2017, Liu et al. 2020):
  they need the logits, which only a Keras model (a run, a .keras file) gives here;
- ink shape, from the 28x28 input: the mean stroke width; and how much of the ink found in
  the image the digit's selection kept (little, for a cluttered photo);
- entropy at the default, and then the ink kept.

Prints the tables per model and one summary (the README's), and writes
bench/results/realdigits-<time>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.synthetic import non_digits, realistic_digits  # noqa: E402
from digitnet.data import load_mnist, resolve_source  # noqa: E402
from digitnet.evaluation.calibration import expected_calibration_error  # noqa: E402
from digitnet.inference import DEFAULT_MAX_ENTROPY, DEFAULT_MIN_CONFIDENCE  # noqa: E402
from digitnet.inference.predict import answers, entropy  # noqa: E402

DEFAULT_REALDIGITS = REPO.parent / "shared" / "data" / "realdigits-dev"
MIN_CONFIDENCES = (0.0, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9)
MAX_ENTROPIES = (0.6, 0.8, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2.0, 2.31)
RENDERED = 300  # rendered MNIST test digits
DIGITS_REFUSED = 0.03  # the most real digits, and held-out rendered digits, a score may refuse


def read_labels(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open() as handle:
        return list(csv.DictReader(handle))


def write_images(workdir: Path, data_dir: str | None, rendered: int, seed: int) -> dict:
    """Generate the rendered digits and the non-digits as files; {set: [(path, label, group)]}."""
    workdir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(resolve_source(data_dir))
    sets: dict = {"rendered": [], "non_digits": []}
    for index, (image, label, style) in enumerate(
            realistic_digits(mnist.x_test, mnist.y_test, rendered, seed)):
        path = workdir / f"digit_{index:04d}.png"
        image.save(path)
        sets["rendered"].append((str(path), label, style))
    for index, (image, kind) in enumerate(non_digits(seed)):
        path = workdir / f"other_{index:04d}.png"
        image.save(path)
        sets["non_digits"].append((str(path), None, kind))
    return sets


def real_set(folder: Path) -> list[tuple]:
    return [(str(folder / row["file"]), int(row["label"]), row["style"])
            for row in read_labels(folder)]


def ink_kept(path: str) -> float:
    """The share of the ink found in the image (its brightness above the paper) that the
    digit's selection kept: 1 for a lone digit, little for a digit picked out of clutter; 0
    when nothing was selected. predict's own stages, up to the selection."""
    from digitnet.images.decode import load_image
    from digitnet.images.ink import dark_ink, segment
    from digitnet.images.preprocess import grayscale
    from digitnet.images.resample import WORK_SIDE
    from digitnet.images.selection import select_digit

    gray = grayscale(load_image(path, draft_side=WORK_SIDE))
    ink = dark_ink(gray)
    pieces = segment(ink)
    mask = select_digit(pieces) if pieces else None
    total = float(ink.sum(dtype=np.float64))
    return float(ink[mask].sum(dtype=np.float64)) / total if mask is not None and total else 0.0


def stroke_width(image: np.ndarray) -> float:
    """Mean stroke width (px) of a 28x28 input's ink (> 0.5): twice the mean distance of its
    pixels to the background; 0 without ink."""
    ink = np.pad(image > 0.5, 1).astype(np.uint8)
    if not ink.any():
        return 0.0
    distances = cv2.distanceTransform(ink, cv2.DIST_L2, cv2.DIST_MASK_5)
    return 2 * float(distances[ink > 0].mean())


def inputs(items: list[tuple]) -> dict:
    """The 28x28 inputs of a set (as predict makes them) and the ink-shape measures."""
    from digitnet.images.batch import preprocess_files

    done = preprocess_files([path for path, _, _ in items])
    bad = [item.path for item in done if item.error is not None]
    if bad:
        raise SystemExit(f"cannot read {bad[0]}: {done[0].error}")
    images = np.stack([item.image for item in done])
    return {"images": images, "labels": [label for _, label, _ in items],
            "groups": [group for _, _, group in items],
            "kept": np.array([ink_kept(path) for path, _, _ in items]),
            "width": np.array([stroke_width(image) for image in images])}


def logit_function(model: str):
    """images (N, 28, 28) -> logits (the last Dense layer's output before its softmax, the
    temperature folded in), float64, for a model that has a Keras file; None for a model file
    that gives only probabilities."""
    from digitnet.inference.modelfile import resolve_model_file

    keras_file = resolve_model_file(model, "keras")
    if keras_file.format != "keras":
        return None
    from digitnet.backend import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    network = keras.saving.load_model(keras_file.path, compile=False)
    last = network.layers[-1]
    features = keras.Model(network.inputs, last.input)
    kernel, bias = (np.asarray(w, np.float64) for w in last.get_weights())

    def logits(images: np.ndarray) -> np.ndarray:
        hidden = features.predict(images[..., None], batch_size=1000, verbose=0)
        return np.asarray(hidden, np.float64) @ kernel + bias

    return logits


# Scores where a high value means "not a digit": the side-by-side table shows "> -threshold".
NEGATED = ("entropy", "stroke width (28x28)")


def scored(classifier, logits, data: dict) -> dict:
    """One model's answers for one set: probabilities, the default rule's answers, scores."""
    from scipy.special import logsumexp

    probabilities = classifier.predict(data["images"][..., None])
    has_ink = data["images"].reshape(len(probabilities), -1).any(axis=1)
    found = answers([str(i) for i in range(len(probabilities))], probabilities, 1,
                    DEFAULT_MIN_CONFIDENCE, has_ink.tolist(), DEFAULT_MAX_ENTROPY)
    # every score: higher is more like a digit; "unknown" below a threshold (or without ink)
    scores = {"top probability": probabilities.max(axis=1),
              "entropy": -entropy(probabilities),
              "stroke width (28x28)": -data["width"], "ink kept": data["kept"]}
    if logits is not None:
        values = logits(data["images"])
        scores["max-logit"] = values.max(axis=1)
        scores["energy"] = logsumexp(values, axis=1)  # minus the energy, at T = 1
    return {"probabilities": probabilities, "has_ink": has_ink, "scores": scores,
            "default_unknown": np.array([f.digit is None for f in found]),
            "digit": probabilities.argmax(axis=1), "labels": data["labels"],
            "groups": data["groups"]}


def refused_share(part: dict, score: str, threshold: float, then: tuple | None = None) -> float:
    """Share answered "unknown" when `score` < threshold (no ink: always); `then`: (score,
    threshold) also refused."""
    refused = ~part["has_ink"] | (part["scores"][score] < threshold)
    if then is not None:
        refused |= part["scores"][then[0]] < then[1]
    return float(refused.mean()) if len(refused) else 0.0


def highest_threshold(parts: list[dict], score: str, before: tuple | None = None) -> float:
    """The highest threshold on `score` at which every part (the real digits; the held-out
    rendered digits) has at most DIGITS_REFUSED refused, counting what no ink and `before`
    (score, threshold) refuse already."""
    limits = []
    for part in parts:
        values = np.concatenate([p["scores"][score] for p in part])
        already = np.concatenate([~p["has_ink"] | (False if before is None else
                                                   p["scores"][before[0]] < before[1])
                                  for p in part])
        allowed = int(np.floor(DIGITS_REFUSED * len(values) + 1e-9)) - int(already.sum())
        candidates = np.sort(values[~already])
        limits.append(-np.inf if allowed < 0 else
                      np.inf if allowed >= len(candidates) else candidates[allowed])
    return float(min(limits))


def side_by_side(report: dict, held: list[dict]) -> list[dict]:
    """Each score at its highest threshold with <= 3% of real and held-out rendered digits
    refused; what it then refuses of the reported sets and of the held-out non-digits."""
    digits = [[report["real"]], [p["rendered"] for p in held]]
    rows = []
    for score in report["real"]["scores"]:
        threshold = highest_threshold(digits, score)
        rows.append(row_for(report, held, score, threshold, None))
    kept_after = highest_threshold(digits, "ink kept", ("entropy", -DEFAULT_MAX_ENTROPY))
    rows.append(row_for(report, held, "ink kept", kept_after, ("entropy", -DEFAULT_MAX_ENTROPY),
                        name=f"entropy <= {DEFAULT_MAX_ENTROPY}, then ink kept"))
    return rows


def row_for(report: dict, held: list[dict], score: str, threshold: float, then: tuple | None,
            name: str | None = None) -> dict:
    return {"score": name or score, "threshold": threshold,
            "real_refused": refused_share(report["real"], score, threshold, then),
            "rendered_refused": refused_share(report["rendered"], score, threshold, then),
            "non_digits_refused": refused_share(report["non_digits"], score, threshold, then),
            "held_out_non_digits_refused": float(np.mean(
                [refused_share(p["non_digits"], score, threshold, then) for p in held]))}


def accuracy(part: dict) -> dict:
    """Accuracy overall and per group, with no threshold (no ink: wrong)."""
    groups: dict = defaultdict(list)
    for label, group, digit, ink in zip(part["labels"], part["groups"], part["digit"].tolist(),
                                        part["has_ink"].tolist()):
        groups[group].append(ink and digit == label)
    hits = [hit for group in groups.values() for hit in group]
    return {"accuracy": float(np.mean(hits)), "images": len(hits),
            "per_group": {group: {"accuracy": float(np.mean(h)), "images": len(h)}
                          for group, h in sorted(groups.items())}}


def ece(part: dict) -> float:
    correct = part["digit"] == np.array(part["labels"])
    return expected_calibration_error(part["probabilities"], np.where(correct, part["digit"],
                                                                      (part["digit"] + 1) % 10))


def rule_refusals(part: dict, min_confidence: float, max_entropy: float) -> float:
    from digitnet.inference.predict import unknown

    refused = ~part["has_ink"] | unknown(part["probabilities"], min_confidence, max_entropy)
    return float(refused.mean())


def measure(report: dict, held: list[dict]) -> dict:
    """Every number of one model: `report` and each of `held` are {set name: scored(...)}."""
    kinds: dict = defaultdict(list)
    for index, kind in enumerate(report["non_digits"]["groups"]):
        kinds[kind].append(index)
    sweeps = [("min_confidence", m, DEFAULT_MAX_ENTROPY) for m in MIN_CONFIDENCES] + \
             [("max_entropy", DEFAULT_MIN_CONFIDENCE, h) for h in MAX_ENTROPIES]
    return {
        "real": accuracy(report["real"]), "rendered": accuracy(report["rendered"]),
        "ece_real": ece(report["real"]), "ece_rendered": ece(report["rendered"]),
        "default": {name: float(report[name]["default_unknown"].mean())
                    for name in ("real", "rendered", "non_digits")} | {
            "per_kind": {k: float(report["non_digits"]["default_unknown"][i].mean())
                         for k, i in sorted(kinds.items())},
            "held_out_rendered": float(np.mean([p["rendered"]["default_unknown"].mean()
                                                for p in held])),
            "held_out_non_digits": float(np.mean([p["non_digits"]["default_unknown"].mean()
                                                  for p in held]))},
        "sweep": [{"vary": vary, "min_confidence": m, "max_entropy": h,
                   "real_refused": rule_refusals(report["real"], m, h),
                   "rendered_refused": rule_refusals(report["rendered"], m, h),
                   "non_digits_refused": rule_refusals(report["non_digits"], m, h),
                   "held_out_rendered_refused": float(np.mean(
                       [rule_refusals(p["rendered"], m, h) for p in held])),
                   "held_out_non_digits_refused": float(np.mean(
                       [rule_refusals(p["non_digits"], m, h) for p in held]))}
                  for vary, m, h in sweeps],
        "side_by_side": side_by_side(report, held),
    }


def summary_table(results: dict) -> str:
    """The README's table: one row per model at the default rule."""
    lines = ["| model | real digits right | rendered digits right | ECE real / rendered | "
             "real refused | rendered refused | non-digits refused |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, result in results.items():
        row = result["default"]
        lines.append(f"| `{model}` | {result['real']['accuracy']:.1%} | "
                     f"{result['rendered']['accuracy']:.1%} | {result['ece_real']:.1%} / "
                     f"{result['ece_rendered']:.1%} | {row['real']:.1%} | "
                     f"{row['rendered']:.1%} | {row['non_digits']:.1%} |")
    return "\n".join(lines)


def side_by_side_table(result: dict) -> str:
    lines = ["| score | unknown when | real refused | rendered refused | non-digits refused | "
             "held-out non-digits refused |", "| --- | --- | --- | --- | --- | --- |"]
    for row in result["side_by_side"]:
        rule = (f"> {-row['threshold']:.4g}" if row["score"].split(",")[0] in NEGATED
                else f"< {row['threshold']:.4g}")
        lines.append(f"| {row['score']} | {rule} | {row['real_refused']:.1%} | "
                     f"{row['rendered_refused']:.1%} | {row['non_digits_refused']:.1%} | "
                     f"{row['held_out_non_digits_refused']:.1%} |")
    return "\n".join(lines)


def print_model(model: str, result: dict) -> None:
    for name in ("real", "rendered"):
        part = result[name]
        groups = ", ".join(f"{g} {v['accuracy']:.1%} ({v['images']})"
                           for g, v in part["per_group"].items())
        print(f"{model}: {name} {part['accuracy']:.1%} of {part['images']} [{groups}]")
    print(f"  ECE real {result['ece_real']:.1%}, rendered {result['ece_rendered']:.1%}")
    default = result["default"]
    kinds = " ".join(f"{k} {v:.0%}" for k, v in default["per_kind"].items())
    print(f"  default (--min-confidence {DEFAULT_MIN_CONFIDENCE}, --max-entropy "
          f"{DEFAULT_MAX_ENTROPY}): refused real {default['real']:.1%}, rendered "
          f"{default['rendered']:.1%} (held-out {default['held_out_rendered']:.1%}), non-digits "
          f"{default['non_digits']:.1%} (held-out {default['held_out_non_digits']:.1%}) [{kinds}]")
    for row in result["sweep"]:
        print(f"  --min-confidence {row['min_confidence']:.2f} --max-entropy "
              f"{row['max_entropy']:.2f}: refused real {row['real_refused']:.1%}, rendered "
              f"{row['rendered_refused']:.1%} (held-out {row['held_out_rendered_refused']:.1%}), "
              f"non-digits {row['non_digits_refused']:.1%} (held-out "
              f"{row['held_out_non_digits_refused']:.1%})")
    print(f"  each score at <= {DIGITS_REFUSED:.0%} of real and held-out rendered digits "
          f"refused:\n" + side_by_side_table(result))


def model_and_data_parser(doc: str) -> argparse.ArgumentParser:
    """The options every real-image bench takes: the models, the real images, MNIST."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="run directory or model file; repeatable")
    parser.add_argument("--realdigits", type=Path, default=DEFAULT_REALDIGITS)
    parser.add_argument("--data-dir", help="MNIST (for the generated digits); default as train")
    return parser


def main() -> None:
    from digitnet.inference.classifier import load_classifier

    parser = model_and_data_parser(__doc__)
    parser.add_argument("--rendered", type=int, default=RENDERED, help="rendered digits")
    parser.add_argument("--seed", type=int, default=0, help="the generated sets reported")
    parser.add_argument("--choose-seeds", type=int, nargs="+", default=[1, 2],
                        help="the generated sets each score's threshold is chosen on")
    args = parser.parse_args()
    if args.seed in args.choose_seeds:
        parser.error("--seed must not be one of --choose-seeds")
    with tempfile.TemporaryDirectory() as tmp:
        generated = {seed: write_images(Path(tmp) / str(seed), args.data_dir, args.rendered,
                                        seed) for seed in (args.seed, *args.choose_seeds)}
        real = inputs(real_set(args.realdigits))
        sets = {seed: {name: inputs(items) for name, items in found.items()}
                for seed, found in generated.items()}
    results = {}
    for model in args.model:
        classifier, logits = load_classifier(model), logit_function(model)
        report = {"real": scored(classifier, logits, real),
                  **{name: scored(classifier, logits, data)
                     for name, data in sets[args.seed].items()}}
        held = [{name: scored(classifier, logits, data) for name, data in sets[seed].items()}
                for seed in args.choose_seeds]
        results[model] = measure(report, held)
        print_model(model, results[model])
    print(f"\nAt the default (--min-confidence {DEFAULT_MIN_CONFIDENCE}, --max-entropy "
          f"{DEFAULT_MAX_ENTROPY}):\n" + summary_table(results))
    out = REPO / "bench" / "results" / f"realdigits-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seed": args.seed, "choose_seeds": args.choose_seeds,
                               "models": results}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
