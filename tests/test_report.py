"""`digitnet report`: one self-contained HTML page per run, and exact errors for bad input."""

import base64
import io
import json
import re

from click.testing import CliRunner
from PIL import Image

from digitnet.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_report_evaluates_the_run_then_writes_a_self_contained_page(run_copy, tiny_data_dir,
                                                                      runs_dir):
    result = run("report", str(run_copy), "--data-dir", str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    page_path = run_copy / "report.html"
    assert result.output == (f"Evaluating {run_copy} on the test images for its report\n"
                             f"Report written to {page_path}\n")
    page = page_path.read_text()
    evaluation = json.loads((run_copy / "evaluation-test.json").read_text())
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert f"{evaluation['accuracy']:.2%}" in page and f"{evaluation['loss']:.4f}" in page
    assert f"{metrics['val_accuracy']:.2%}" in page and f"{metrics['train_loss']:.4f}" in page
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert "name: default" in page and manifest["started"] in page

    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 6  # learning curves, 2 confusion matrices, per class, mistakes,
    # reliability
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page

    runs_dir.mkdir()  # with no argument: runs/latest, whose evaluation is now up to date
    (runs_dir / "latest").symlink_to(run_copy)
    again = run("report")
    assert again.output == f"Report written to {run_copy.resolve() / 'report.html'}\n"


def test_report_names_the_missing_data(run_copy, tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITNET_DATA_DIR", raising=False)
    config = run_copy / "config.yaml"
    gone = tmp_path / "gone"
    config.write_text(re.sub(r"source: .*", f"source: {gone}", config.read_text()))
    result = run("report", str(run_copy))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(f"Error: {gone}: data source not found")
    assert result.output.endswith("(the report evaluates the run first: pass --data-dir PATH or "
                                  "set $DIGITNET_DATA_DIR)\n")


def test_report_errors(runs_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    cases = [
        (["nowhere"], "Error: nowhere: no such run directory\n"),
        ([], f"Error: {runs_dir / 'latest'}: no such run directory (train one with `digitnet "
             f"train`, or pass a run directory)\n"),
        ([str(tmp_path)], f"Error: {tmp_path}: not a run directory (expected a folder written by "
                          f"`digitnet train`, with a config.yaml)\n"),
        ([str(tmp_path / "notes.txt")], f"Error: {tmp_path / 'notes.txt'}: not a run directory "
                                        f"(expected a folder written by `digitnet train`, with a "
                                        f"config.yaml)\n"),
    ]
    for args, message in cases:
        result = run("report", *args)
        assert (result.exit_code, result.output) == (1, message)
