"""`digitnet report`: one self-contained HTML page per run.

The page shows how the run did (metrics), how it learned (curves), what it confuses (confusion
matrices, per-digit accuracy, the most confident mistakes) and how it was made (config,
manifest). Styles are in the page and images are base64 data URIs; there are no scripts, fonts or
links, so the file opens offline from disk and can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

from digitnet.config import NUM_CLASSES
from digitnet.errors import DigitnetError
from digitnet.evaluation.evaluate import evaluate, foreign_data
from digitnet.evaluation.plots import plot_path
from digitnet.runs import layout
from digitnet.runs.listing import BROKEN, DATE_SHOWN, FINISHED, describe_run, parse_started

log = logging.getLogger(__name__)

SPLIT = "test"
SPLIT_PLOTS = ("confusion", "confusion-normalized", "per-class-accuracy", "mistakes",
               "reliability")


def write_report(run: str | Path | None, data_dir: str | None = None) -> Path:
    """Write RUN_DIR/report.html, evaluating the run on the test images first if needed.

    Args:
      run: a run directory, or None for runs/latest.
      data_dir: the data for that evaluation, or None for $DIGITNET_DATA_DIR or the run's data.

    Returns:
      The path of the written page.

    Raises:
      DigitnetError: `run` is not a run directory, it is broken (a file missing, corrupt or
        hand-edited), or the evaluation it needs fails or is not on the run's own test images.
    """
    run_dir = find_run(run)
    described = describe_run(run_dir)
    if described["status"] == BROKEN:
        raise DigitnetError(f"{run_dir}: broken run ({described['problem']})")
    evaluation = test_evaluation(run_dir, data_dir)
    path = run_dir / layout.REPORT_FILE
    layout.write_text(path, render_page(run_dir, described, evaluation))
    return path


def find_run(run: str | Path | None) -> Path:
    """The run directory named by `run` (runs/latest when None), checked to be a run."""
    path = layout.latest_link() if run is None else Path(run)
    if not path.exists():
        hint = " (train one with `digitnet train`, or pass a run directory)" if run is None else ""
        raise DigitnetError(f"{path}: no such run directory{hint}")
    if not (path / layout.CONFIG_FILE).is_file():
        raise DigitnetError(f"{path}: not a run directory (expected a folder written by "
                            f"`digitnet train`, with a {layout.CONFIG_FILE})")
    return path.resolve() if run is None else path


def test_evaluation(run_dir: Path, data_dir: str | None) -> dict:
    """The run's saved test evaluation; evaluated now if missing, of another model or other
    data than the run's own test images, or written without plots (by an older digitnet).

    Raises:
      DigitnetError: the evaluation fails, or `data_dir` is not the run's own data.
    """
    saved = layout.evaluation_file(run_dir, SPLIT)
    if is_current(saved, run_dir):
        return layout.read_json(saved)
    log.info("Evaluating %s on the test images for its report", run_dir)
    evaluation = evaluate(run_dir, SPLIT, data_dir)
    problem = foreign_data(evaluation, run_dir)
    if problem:
        raise DigitnetError(f"{problem}; a report scores the run's own test images")
    return evaluation


def is_current(saved: Path, run_dir: Path) -> bool:
    """Whether `saved` evaluated the run's model as it is today on the run's own test images,
    and its plots and mistakes are all there."""
    try:
        report = layout.read_json(saved)  # a named pipe is refused, never read
        model_sha256 = layout.file_sha256(run_dir / layout.BEST_MODEL)
    except (OSError, DigitnetError):
        return False
    if report.get("keras_sha256") != model_sha256:
        return False
    plots = (plot_path(run_dir, name, SPLIT) for name in SPLIT_PLOTS)
    return (report.get("split") == SPLIT and not foreign_data(report, run_dir)
            and "mistakes" in report and all(path.is_file() for path in plots))


# ---- the page ------------------------------------------------------------------------------------


def render_page(run_dir: Path, run: dict, evaluation: dict) -> str:
    """The whole HTML page of a run (`run`: its `describe_run`) and its test evaluation."""
    metrics = read_json_or_empty(run_dir / layout.METRICS_FILE)
    sections = [
        summary_section(run, evaluation),
        metrics_section(metrics, run),
        image_section("How it learned", run_dir, "learning-curves", None,
                      "Loss and accuracy per epoch on the training and validation images, and "
                      "the learning rate. Validation far below training means overfitting."),
        confusion_section(run_dir),
        per_class_section(run_dir, evaluation),
        mistakes_section(run_dir, evaluation),
        calibration_section(run_dir, evaluation),
        config_section(run_dir),
        manifest_section(run_dir),
    ]
    title = f"digitnet run {run['run']}"
    return PAGE.format(title=escape(title), style=STYLE, body="\n".join(sections))


def summary_section(run: dict, evaluation: dict) -> str:
    """The title, the run's status and the headline numbers as tiles."""
    confusion = evaluation["confusion_matrix"]
    wrong = evaluation["examples"] - sum(confusion[d][d] for d in range(NUM_CLASSES))
    tiles = [("test accuracy", f"{evaluation['accuracy']:.2%}"),
             (f"mistakes in {evaluation['examples']:,} test images", f"{wrong:,}"),
             ("test loss", f"{evaluation['loss']:.4f}"),
             ("macro F1", f"{evaluation['macro_f1']:.4f}"),
             ("calibration error (ECE)",
              number((evaluation.get("calibration") or {}).get("ece"), ".2%")),
             ("epochs", f"{run['epochs'] or 0} of {run['planned_epochs'] or '?'}"),
             ("training time", seconds_text(run["train_seconds"]))]
    tile_html = "".join(f'<div class="tile"><div class="value">{escape(value)}</div>'
                        f'<div class="label">{escape(label)}</div></div>' for label, value in tiles)
    status = run["status"] + (f": {run['problem']}" if run["problem"] else "")
    return (f"<header><h1>digitnet run <code>{escape(run['run'])}</code></h1>"
            f'<p class="meta">config <b>{escape(run["config"] or "?")}</b> &middot; started '
            f"{escape(started_text(run['started']))} &middot; status "
            f'<span class="status {escape(run["status"])}">{escape(status)}</span> &middot; '
            f"<code>{escape(run['path'])}</code></p></header>"
            f'<section class="tiles">{tile_html}</section>')


def started_text(started) -> str:
    parsed = parse_started(started)
    return parsed.strftime(DATE_SHOWN) if parsed else "?"


def seconds_text(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def metrics_section(metrics: dict, run: dict) -> str:
    """Loss and accuracy of the best model on each split, from metrics.json."""
    if not metrics or run["status"] != FINISHED:
        note = ("Training has not finished, so there is no metrics.json yet; the numbers above "
                "come from evaluating the best model so far.")
        return f"<section><h2>Metrics</h2><p>{escape(note)}</p></section>"
    if run["note"]:  # model-best.keras replaced: metrics.json measured another model
        note = f"{run['note']}; the numbers above are of the model there now."
        return f"<section><h2>Metrics</h2><p>{escape(note)}</p></section>"
    rows = [[split, number(metrics.get(f"{split}_loss"), ".4f"),
             number(metrics.get(f"{split}_accuracy"), ".2%")] for split in ("train", "val", "test")]
    note = (f"The best epoch ({metrics.get('best_epoch')}, by validation accuracy) is the model "
            f"kept. Loss here is plain cross-entropy; training time excludes data loading and "
            f"checkpoint writes ({seconds_text(metrics.get('checkpoint_seconds'))}).")
    return (f"<section><h2>Metrics</h2>{table(['split', 'loss', 'accuracy'], rows)}"
            f"<p class=note>{escape(note)}</p></section>")


def number(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def confusion_section(run_dir: Path) -> str:
    """The two confusion matrices side by side."""
    images = "".join(image_tag(plot_path(run_dir, name, SPLIT), name)
                     for name in ("confusion", "confusion-normalized"))
    note = ("Rows are the true digit, columns the model's answer: everything off the diagonal "
            "is a mistake. The right one shows each row as percentages, coloured on a log scale "
            "so that small confusions stand out.")
    return (f"<section><h2>What it confuses</h2><p>{escape(note)}</p>"
            f'<div class="pair">{images}</div></section>')


def per_class_section(run_dir: Path, evaluation: dict) -> str:
    """Per-digit accuracy as a plot, and precision, recall and F1 as a table."""
    rows = [[c["digit"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
             f"{c['support']:,}"] for c in evaluation["per_class"]]
    header = ["digit", "precision", "recall (accuracy)", "F1", "images"]
    return (f"<section><h2>Per digit</h2>"
            f'<div class="pair">{image_tag(plot_path(run_dir, "per-class-accuracy", SPLIT), "")}'
            f"{table(header, rows)}</div></section>")


def mistakes_section(run_dir: Path, evaluation: dict) -> str:
    """The gallery of the most confident mistakes, and the same mistakes as a table."""
    mistakes = evaluation.get("mistakes", [])
    rows = [[f"#{m['index']}", m["label"], m["predicted"], f"{m['probability']:.1%}"]
            for m in mistakes]
    note = ("The wrong answers the model was surest of, most confident first (# is the image's "
            "index in the test set). Some are sloppy digits; some may be mislabelled.")
    listing = table(["image", "true", "predicted", "probability"], rows) if rows else ""
    return (f"<section><h2>Most confident mistakes</h2><p>{escape(note)}</p>"
            f"{image_tag(plot_path(run_dir, 'mistakes', SPLIT), 'mistakes')}"
            f"<details><summary>as a table</summary>{listing}</details></section>")


def calibration_section(run_dir: Path, evaluation: dict) -> str:
    """The reliability diagram: whether a probability of p means right p of the time."""
    calibration = evaluation.get("calibration") or {}
    note = ("When the model says 90%, is it right 9 times in 10? Each bar is the accuracy of the "
            "test images whose top probability fell in that bin; on the dashed diagonal the "
            "probabilities mean exactly what they say. ECE is the average gap, weighted by "
            "images per bin (15 bins).")
    if calibration.get("before"):
        note += (f" Training fitted a temperature of {calibration['temperature']:.3f} on the "
                 f"validation images and folded it into the model (ECE before: "
                 f"{calibration['before']['ece']:.2%}, after: {calibration['ece']:.2%}).")
    return (f"<section><h2>Can its probabilities be trusted?</h2><p>{escape(note)}</p>"
            f"{image_tag(plot_path(run_dir, 'reliability', SPLIT), 'reliability diagram')}"
            f"</section>")


def image_section(title: str, run_dir: Path, name: str, split: str | None, note: str) -> str:
    return (f"<section><h2>{escape(title)}</h2><p>{escape(note)}</p>"
            f"{image_tag(plot_path(run_dir, name, split), name)}</section>")


def config_section(run_dir: Path) -> str:
    """config.yaml as it is."""
    text = read_text_or(run_dir / layout.CONFIG_FILE, "(config.yaml is missing or unreadable)")
    return f"<section><h2>Config</h2><pre>{escape(text)}</pre></section>"


def manifest_section(run_dir: Path) -> str:
    """manifest.json as a table of what produced the run."""
    manifest = read_json_or_empty(run_dir / layout.MANIFEST_FILE)
    rows = [[key, value if isinstance(value, str) else json.dumps(value, indent=1)]
            for key, value in manifest.items()]
    body = table(None, rows) if rows else "<p>(manifest.json is missing)</p>"
    return f'<section><h2>Manifest</h2><div class="manifest">{body}</div></section>'


def image_tag(path: Path, alt: str) -> str:
    """The PNG at `path` inlined as a data URI, or a note saying it is missing."""
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<p class="missing">({escape(path.name)} is missing)</p>'
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def table(header: list[str] | None, rows: list[list]) -> str:
    """An HTML table of escaped cells, with a header row unless `header` is None."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header or ())
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def escape(value) -> str:
    return html.escape(str(value))


def read_json_or_empty(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_text_or(path: Path, default: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return default


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1320px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fafafa; }
h1 { margin: 0 0 .2em; font-size: 1.7em; }
h2 { margin: 0 0 .5em; font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
section { background: #fff; border: 1px solid #e4e4e4; border-radius: 8px; padding: 1em 1.3em;
          margin: 1.2em 0; }
.meta { color: #555; margin: 0; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .92em; }
pre { background: #f4f4f4; padding: .8em 1em; border-radius: 6px; overflow-x: auto; }
.tiles { display: flex; flex-wrap: wrap; gap: .8em; background: none; border: 0; padding: 0; }
.tile { flex: 1 1 150px; background: #fff; border: 1px solid #e4e4e4; border-radius: 8px;
        padding: .7em 1em; }
.tile .value { font-size: 1.6em; font-weight: 600; }
.tile .label { color: #666; font-size: .9em; }
.status { padding: .05em .5em; border-radius: 1em; background: #eee; }
.status.finished { background: #dff3e3; color: #17622b; }
.status.broken, .status.failed { background: #fbe0e0; color: #8a1c1c; }
.status.interrupted, .status.running { background: #fff1d6; color: #7a5200; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1.5em;
        align-items: start; }
table { border-collapse: collapse; margin: .5em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .8em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
.manifest td { text-align: left; vertical-align: top; white-space: pre-wrap;
               font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; }
.manifest td:first-child { font-weight: 600; white-space: nowrap; }
.note, .missing { color: #666; font-size: .92em; }
details { margin-top: .5em; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
