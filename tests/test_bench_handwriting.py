"""bench/handwriting.py: each image is predicted once, however many of its sets hold it."""

from pathlib import Path
from types import SimpleNamespace

import bench.handwriting as handwriting


def test_an_image_in_two_sets_is_predicted_once_and_answered_in_both(monkeypatch):
    """The real images are one set by style and one by source: one prediction each, and
    each set's rows carry its own labels and groups in its own order."""
    calls = []

    def predict(paths, model, **rules):
        calls.append(list(paths))
        return [SimpleNamespace(digit=int(Path(path).stem), probability=0.5) for path in paths]

    monkeypatch.setattr(handwriting, "predict", predict)
    sets = {"real": [("real/1.png", 1, "photo"), ("real/2.png", 3, "scan")],
            "real-by-source": [("real/2.png", 3, "writer-b"), ("real/1.png", 1, "writer-a")],
            "rendered": [("rendered/7.png", 7, "canvas")]}
    rows = handwriting.answers("runs/x", sets)
    assert calls == [["real/1.png", "real/2.png", "rendered/7.png"]]
    assert rows == {
        "real": [{"label": 1, "group": "photo", "digit": 1, "probability": 0.5},
                 {"label": 3, "group": "scan", "digit": 2, "probability": 0.5}],
        "real-by-source": [{"label": 3, "group": "writer-b", "digit": 2, "probability": 0.5},
                           {"label": 1, "group": "writer-a", "digit": 1, "probability": 0.5}],
        "rendered": [{"label": 7, "group": "canvas", "digit": 7, "probability": 0.5}]}
