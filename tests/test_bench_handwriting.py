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


def test_continental_ones_get_a_flag_and_sevens_a_bar_across_the_stem():
    """bench.synthetic's continental digits: a 1's new ink reaches left of its stem, in its upper
    half; a 7's is on both sides of its stem, in its middle; the set alternates 1s and 7s."""
    import cv2
    import numpy as np

    from bench.synthetic import continental_digits, with_bar, with_flag

    one = np.zeros((28, 28), np.uint8)
    cv2.line(one, (14, 4), (14, 24), 255, 2)
    seven = np.zeros((28, 28), np.uint8)
    cv2.polylines(seven, [np.array([[7, 4], [21, 4], [12, 24]])], False, 255, 2)
    rng = np.random.default_rng(0)
    flag = (with_flag(one, rng) > 127) & (one <= 127)
    rows, columns = np.nonzero(flag)
    assert len(rows) >= 4 and columns.min() < 12 and columns.max() <= 16  # the stem: 13-15
    assert rows.max() < 4 + 0.5 * 20 + 2
    bar = (with_bar(seven, rng) > 127) & (seven <= 127)
    rows, columns = np.nonzero(bar)
    stem = np.nonzero(seven[rows.min()] > 127)[0].mean()
    assert columns.min() < stem < columns.max() and rows.min() >= 8 and rows.max() <= 20
    images, labels = np.stack([one, seven] * 3), np.array([1, 7] * 3)
    made = continental_digits(images, labels, 4, seed=0)
    assert [label for _, label, _ in made] == [1, 7, 1, 7]
    assert [group for _, _, group in made] == ["flagged 1", "crossed 7"] * 2
