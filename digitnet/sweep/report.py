"""The sweep's report page, SWEEP_DIR/sweep.html, self-contained like `digitnet report`'s page.

It shows the best trial and its parameters, every trial as a table, and Optuna's optimization
history, parameter importances and parallel coordinates (drawn with matplotlib into
SWEEP_DIR/plots/ and inlined as data URIs), then the sweep file and best.yaml.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from digitnet.evaluation.plots import plot_path
from digitnet.evaluation.report import (
    PAGE,
    STYLE,
    escape,
    image_tag,
    read_text_or,
    seconds_text,
    table,
)
from digitnet.runs import layout
from digitnet.sweep.results import BEST_FILE, FORMATS, best_trial, format_cell, study_rows
from digitnet.sweep.study import progress

REPORT_FILE = "sweep.html"
PLOTS = {  # file name -> (title, what it shows)
    "optimization-history": ("Optimization history",
                             "Each complete trial's validation accuracy in the order the trials "
                             "were numbered, and the best so far."),
    "param-importances": ("Parameter importance",
                          "How much of the variation in validation accuracy each searched key "
                          "explains (Optuna's default importance evaluator)."),
    "parallel-coordinates": ("Parallel coordinates",
                             "One line per complete trial across every searched key, coloured "
                             "by validation accuracy: where the good trials cluster."),
}


def write_sweep_report(spec, study, sweep_dir: Path, sweep_file: Path, storage: str) -> Path:
    """Draw the plots and write SWEEP_DIR/sweep.html; return its path."""
    notes = {name: draw_plot(study, name, sweep_dir, spec.objective.metric) for name in PLOTS}
    page = render_page(spec, study, sweep_dir, sweep_file, storage, notes)
    path = sweep_dir / REPORT_FILE
    layout.write_text(path, page)
    return path


def draw_plot(study, name: str, sweep_dir: Path, metric: str) -> str:
    """Draw one Optuna plot to SWEEP_DIR/plots/<name>.png; '' or why it could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from optuna.visualization import matplotlib as optuna_plots

    draw = {"optimization-history": optuna_plots.plot_optimization_history,
            "param-importances": optuna_plots.plot_param_importances,
            "parallel-coordinates": optuna_plots.plot_parallel_coordinate}[name]
    path = plot_path(sweep_dir, name)
    layout.make_dir(path.parent, "the plots folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = draw(study, target_name=metric)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 4.8)
        figure.tight_layout()
        with layout.atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few complete trials
        path.unlink(missing_ok=True)
        return f"(not drawn: {error})"
    finally:
        pyplot.close("all")
    return ""


def render_page(spec, study, sweep_dir: Path, sweep_file: Path, storage: str,
                notes: dict) -> str:
    """The whole HTML page."""
    rows = study_rows(study)
    sections = [summary_section(spec, study, sweep_dir, storage, rows),
                best_section(study),
                *(plot_section(sweep_dir, name, notes[name]) for name in PLOTS),
                trials_section(spec, rows),
                text_section("Sweep file", sweep_file),
                text_section(BEST_FILE, sweep_dir / BEST_FILE)]
    return PAGE.format(title=escape(f"digitnet sweep {spec.name}"), style=STYLE,
                       body="\n".join(sections))


def summary_section(spec, study, sweep_dir: Path, storage: str, rows: list[dict]) -> str:
    state = progress(study, spec.trials)
    best = best_trial(study)
    seconds = sum(row["train_seconds"] or 0 for row in rows)
    tiles = [("best val accuracy", f"{best.value:.2%}" if best else "-"),
             ("best trial", str(best.number) if best else "-"),
             ("trials finished", f"{state['finished']} of {spec.trials}"),
             ("complete / pruned / failed",
              f"{state['complete']} / {state['pruned']} / {state['fail']}"),
             ("training time, all trials", seconds_text(seconds))]
    tile_html = "".join(f'<div class="tile"><div class="value">{escape(value)}</div>'
                        f'<div class="label">{escape(label)}</div></div>' for label, value in tiles)
    return (f"<header><h1>digitnet sweep <code>{escape(spec.name)}</code></h1>"
            f'<p class="meta">study <b>{escape(study.study_name)}</b> in '
            f"<code>{escape(storage)}</code> &middot; objective {escape(spec.objective.metric)}"
            f"{cap_text(spec)} &middot; runs in <code>{escape(sweep_dir)}</code></p></header>"
            f'<section class="tiles">{tile_html}</section>')


def cap_text(spec) -> str:
    cap = spec.objective.max_train_seconds
    return f" with at most {cap:g} s of training" if cap else ""


def best_section(study) -> str:
    best = best_trial(study)
    if best is None:
        return "<section><h2>Best trial</h2><p>No trial has completed yet.</p></section>"
    rows = [[key, format_cell(value)] for key, value in best.params.items()]
    attrs = best.user_attrs
    note = (f"Trial {best.number}: val accuracy {best.value:.4f}, test accuracy "
            f"{format_cell(attrs.get('test_accuracy'), '.4f')}, {format_cell(attrs.get('epochs'))} "
            f"epochs in {seconds_text(attrs.get('train_seconds'))}; run "
            f"{attrs.get('run_dir', '?')}. {BEST_FILE} holds its whole config.")
    return (f"<section><h2>Best trial</h2><p>{escape(note)}</p>"
            f"{table(['searched key', 'value'], rows)}</section>")


def plot_section(sweep_dir: Path, name: str, note: str) -> str:
    title, text = PLOTS[name]
    body = f'<p class="missing">{escape(note)}</p>' if note else image_tag(
        plot_path(sweep_dir, name), title)
    return f"<section><h2>{escape(title)}</h2><p>{escape(text)}</p>{body}</section>"


def trials_section(spec, rows: list[dict]) -> str:
    header = ["trial", "state", "val acc", "test acc", "train s", "epochs", *spec.space, "note"]
    cells = [[row["trial"], row["state"],
              *(format_cell(row[key], FORMATS.get(key))
                for key in ("val_accuracy", "test_accuracy", "train_seconds", "epochs")),
              *(format_cell(row["params"].get(key)) for key in spec.space), row["note"]]
             for row in rows]
    return f"<section><h2>Trials</h2>{table(header, cells)}</section>"


def text_section(title: str, path: Path) -> str:
    text = read_text_or(path, f"({path} is missing)")
    return f"<section><h2>{escape(title)}</h2><pre>{escape(text)}</pre></section>"
