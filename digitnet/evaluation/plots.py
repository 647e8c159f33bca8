"""PNG plots of a run: learning curves, confusion matrices, per-class accuracy, worst mistakes,
reliability diagram.

matplotlib is imported inside the drawing functions, never at module level, so the CLI's --help
stays instant. Figures are drawn on bare `matplotlib.figure.Figure` objects (the Agg renderer,
no pyplot, no display) at a fixed size: every PNG is SIZES[name] x DPI pixels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from digitnet.config import NUM_CLASSES
from digitnet.inputs import not_regular_reason
from digitnet.runs import layout

DPI = 100
SIZES = {  # inches; x DPI = pixels
    "learning-curves": (13.0, 4.0),
    "confusion": (6.4, 5.6),
    "confusion-normalized": (6.4, 5.6),
    "per-class-accuracy": (7.5, 4.2),
    "mistakes": (12.0, 5.6),
    "reliability": (10.0, 4.4),
}
MISTAKE_ROWS, MISTAKE_COLUMNS = 3, 8
SPLIT_NAMES = {"test": "test images", "val": "validation images"}


def plot_path(run_dir: Path, name: str, split: str | None = None) -> Path:
    """RUN_DIR/plots/<name>[-<split>].png; the learning curves belong to no split."""
    return Path(run_dir) / layout.PLOTS_DIR / (f"{name}-{split}.png" if split else f"{name}.png")


def confident_mistakes(probabilities: np.ndarray, labels: np.ndarray,
                       count: int = MISTAKE_ROWS * MISTAKE_COLUMNS) -> list[dict]:
    """The `count` wrong predictions made with the highest probability, most confident first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:count]
    return [{"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
             "probability": round(float(probabilities[i, predicted[i]]), 4)} for i in order]


def write_evaluation_plots(run_dir: Path, report: dict, images: np.ndarray) -> dict[str, str]:
    """Draw an evaluation's plots into RUN_DIR/plots/ (the learning curves too, from history.csv).

    Args:
      run_dir: the run directory.
      report: `evaluate.score`'s report with "split" and "mistakes" added.
      images: the evaluated images, in the order the mistakes' indices refer to.

    Returns:
      {plot name: path} of the files written.
    """
    split, confusion = report["split"], np.asarray(report["confusion_matrix"])
    figures = {
        "confusion": confusion_figure(confusion, split, normalize=False),
        "confusion-normalized": confusion_figure(confusion, split, normalize=True),
        "per-class-accuracy": per_class_figure(confusion, split),
        "mistakes": mistakes_figure(report["mistakes"], images, split, report["examples"]),
    }
    if report.get("calibration"):
        figures["reliability"] = reliability_figure(report["calibration"], split)
    paths = {name: plot_path(run_dir, name, split) for name in figures}
    history = read_history(Path(run_dir) / layout.HISTORY_FILE)
    if history:
        figures["learning-curves"] = learning_curves_figure(history)
        paths["learning-curves"] = plot_path(run_dir, "learning-curves")
    for name, figure in figures.items():
        save_png(figure, paths[name])
    return {name: str(path) for name, path in paths.items()}


def new_figure(name: str, figure_layout: str | None = "constrained", **subplots):
    """A fixed-size figure and its axes; constrained layout fits the labels and keeps the size."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZES[name], dpi=DPI, layout=figure_layout)
    return figure, figure.subplots(**subplots)


def save_png(figure, path: Path) -> None:
    """Write `figure` as a PNG atomically."""
    layout.make_dir(path.parent, "the plots folder")  # a read-only run: one line, no traceback
    with layout.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def read_history(path: Path) -> list[dict]:
    """history.csv's rows as floats; [] when it is missing or unreadable (plots are optional)."""
    if not_regular_reason(path) is not None:  # missing, or a named pipe that would never end
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [{key: float(value) for key, value in row.items()}
                    for row in csv.DictReader(handle)]
    except (OSError, ValueError, TypeError):
        return []


def learning_curves_figure(history: list[dict]):
    """Loss, accuracy (train and validation) and learning rate per epoch, side by side."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    figure, axes = new_figure("learning-curves", ncols=3)
    epochs = [row["epoch"] for row in history]
    panels = (("loss", "Loss (training objective)", 1.0), ("accuracy", "Accuracy", 100.0))
    for ax, (key, title, scale) in zip(axes, panels):
        ax.plot(epochs, [row[key] * scale for row in history], "o-", label="train")
        ax.plot(epochs, [row[f"val_{key}"] * scale for row in history], "s-", label="validation")
        ax.set(title=title, xlabel="epoch", ylabel=key)
        ax.legend()
    axes[1].yaxis.set_major_formatter(PercentFormatter(decimals=1))
    axes[2].plot(epochs, [row["learning_rate"] for row in history], "o-", color="tab:green")
    axes[2].set(title="Learning rate at the end of each epoch", xlabel="epoch",
                ylabel="learning rate")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    figure.suptitle("Learning curves")
    return figure


def confusion_figure(confusion: np.ndarray, split: str, normalize: bool):
    """The confusion matrix as a heat map with every cell's count (or row percentage) written in.

    The row-normalised variant colours on a log scale, so that a 0.5% confusion is visible
    next to a 99% diagonal.
    """
    from matplotlib.colors import LogNorm

    figure, ax = new_figure("confusion-normalized" if normalize else "confusion")
    rows = confusion.sum(axis=1, keepdims=True)
    values = 100 * confusion / np.maximum(rows, 1) if normalize else confusion
    shown = np.where(values > 0, values, np.nan)  # empty cells stay white
    norm = LogNorm(vmin=0.1, vmax=100, clip=True) if normalize else None
    image = ax.imshow(shown, cmap="Blues", norm=norm)
    colorbar = figure.colorbar(image, ax=ax, shrink=0.85)
    colorbar.set_label("% of the true digit's images (log scale)" if normalize else "images")
    if normalize:
        colorbar.set_ticks([0.1, 1, 10, 100], labels=["0.1%", "1%", "10%", "100%"])
    label_cells(ax, values, normalize, threshold=30 if normalize else confusion.max() / 2)
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES), xlabel="predicted digit",
           ylabel="true digit")
    kind = "row-normalised, % of each true digit" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({kind})\n{int(confusion.sum()):,} {SPLIT_NAMES[split]}")
    return figure


def label_cells(ax, values: np.ndarray, percent: bool, threshold: float) -> None:
    """Write each non-zero cell's value in it, white on dark cells."""
    for (row, column), value in np.ndenumerate(values):
        if value > 0:
            text = (f"{value:.1f}" if value >= 0.05 else "<0.1") if percent else f"{value:d}"
            ax.text(column, row, text, ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")


def per_class_figure(confusion: np.ndarray, split: str):
    """Accuracy on each digit's images (recall) as bars, with the overall accuracy as a line."""
    from matplotlib.ticker import PercentFormatter

    figure, ax = new_figure("per-class-accuracy")
    support = confusion.sum(axis=1)
    accuracy = 100 * np.diag(confusion) / np.maximum(support, 1)
    overall = 100 * np.trace(confusion) / max(confusion.sum(), 1)
    bars = ax.bar(range(NUM_CLASSES), accuracy, color=["tab:red" if a < overall else "tab:blue"
                                              for a in accuracy])
    ax.bar_label(bars, labels=[f"{a:.1f}" if n else "n/a" for a, n in zip(accuracy, support)],
                 fontsize=8, padding=2)
    ax.axhline(overall, color="black", linestyle="--", linewidth=1)
    # Zoomed in: at 98% every bar would look the same on a 0-100% axis; the title says so.
    floor = max(0.0, np.floor((accuracy[support > 0].min(initial=100) - 2) / 5) * 5)
    ax.set(xticks=range(NUM_CLASSES), ylim=(floor, 100.8), xlabel="true digit", ylabel="accuracy")
    ax.set_yticks(np.linspace(floor, 100, 6 if 100 - floor > 10 else int(101 - floor)))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_title(f"Accuracy per digit on the {int(support.sum()):,} {SPLIT_NAMES[split]}\n"
                 f"dashed: overall {overall:.2f}%; red: below it; the axis starts at {floor:.0f}%")
    return figure


def mistakes_figure(mistakes: list[dict], images: np.ndarray, split: str, examples: int):
    """A grid of the most confident mistakes: the image, true and predicted digit, probability."""
    # A fixed grid: constrained layout would take most of a second to place 24 small axes.
    figure, axes = new_figure("mistakes", figure_layout=None,
                              nrows=MISTAKE_ROWS, ncols=MISTAKE_COLUMNS,
                              gridspec_kw={"left": 0.01, "right": 0.99, "bottom": 0.01,
                                           "top": 0.87, "wspace": 0.25, "hspace": 0.45})
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, mistake in zip(axes.flat, mistakes):
        ax.imshow(images[mistake["index"]].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"true {mistake['label']}, predicted {mistake['predicted']}\n"
                     f"p = {mistake['probability']:.1%}  (#{mistake['index']})", fontsize=9)
    if mistakes:
        title = (f"The {len(mistakes)} most confident mistakes on the {examples:,} "
                 f"{SPLIT_NAMES[split]} (#: index in the split)")
    else:
        title = f"No mistakes on the {examples:,} {SPLIT_NAMES[split]}"
    figure.suptitle(title)
    return figure


def reliability_figure(calibration: dict, split: str):
    """Reliability diagram: accuracy against confidence per bin (the diagonal is perfect), and
    how many images fall in each bin (log scale: most sit in the top bin)."""
    from matplotlib.ticker import PercentFormatter

    figure, (left, right) = new_figure("reliability", ncols=2, width_ratios=(1.2, 1))
    rows = [row for row in calibration["reliability"] if row["images"]]
    width = rows[0]["high"] - rows[0]["low"] if rows else 1 / 15
    centres = [100 * (row["low"] + row["high"]) / 2 for row in rows]
    left.bar(centres, [100 * row["accuracy"] for row in rows], width=100 * width,
             color="tab:blue", edgecolor="white", label="accuracy in the bin")
    left.plot([100 * row["confidence"] for row in rows], [100 * row["accuracy"] for row in rows],
              "o", color="tab:orange", markersize=4, label="(mean confidence, accuracy)")
    left.plot([0, 100], [0, 100], "--", color="black", linewidth=1, label="perfectly calibrated")
    left.set(xlim=(0, 100), ylim=(0, 100), xlabel="top probability (confidence)",
             ylabel="accuracy")
    left.legend(loc="upper left", fontsize=8)
    title = f"ECE {calibration['ece']:.2%}, NLL {calibration['nll']:.4f}"
    if calibration.get("before"):
        title += (f"\n(temperature {calibration['temperature']:.3f}; before: ECE "
                  f"{calibration['before']['ece']:.2%}, NLL {calibration['before']['nll']:.4f})")
    left.set_title(title, fontsize=10)
    right.bar(centres, [row["images"] for row in rows], width=100 * width, color="tab:gray",
              edgecolor="white")
    right.set(yscale="log", xlim=(0, 100), xlabel="top probability (confidence)",
              ylabel="images (log scale)", title="Images per bin")
    for ax in (left, right):
        ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.grid(alpha=0.3)
    left.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    figure.suptitle(f"Reliability on the {sum(r['images'] for r in rows):,} {SPLIT_NAMES[split]}")
    return figure
