"""The model-file gate: which file answers for the model a user names, and whether it may.

Every command that loads a model (evaluate, predict, report; serve and export too) goes through
`load_classifier` (classifier.py), which calls `resolve_model_file` here and then checks what the
model computes. The rules:

- A run directory (or nothing: runs/latest) names the run's model-best.keras.
- A .keras file that is not a whole Keras archive (empty, random bytes, truncated, a member
  failing its CRC, weights that are not HDF5) is refused by name;
  `digitnet runs` marks such a run broken with the same check (`keras_archive_problem`).
- A .keras file answers through its export beside it (model-best.tflite: no TensorFlow import)
  only when the export's record (model-best.tflite.json, written with it) holds the sha256 of
  this very .keras file and of the export. Otherwise the .keras itself answers and a warning says
  why: a replaced .keras is never answered by a stale export.
- Any other model file named (.tflite) answers as it is.

The result, a `ModelFile`, names the file actually used and its sha256; outputs report it.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from digitnet.errors import DigitnetError, os_reason
from digitnet.runs import layout

log = logging.getLogger(__name__)

FORMATS = {layout.KERAS_SUFFIX: "keras", layout.LITERT_SUFFIX: "litert", ".onnx": "onnx"}
BACKENDS = ("auto", "keras", "litert")
KERAS_WEIGHTS = "model.weights.h5"  # where Keras 3 keeps a .keras archive's weights
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of every HDF5 file


@dataclass(frozen=True)
class ModelFile:
    """A model file the gate let through."""

    path: Path  # the file that answers: the .keras, or its verified export
    format: str  # "keras", "litert", "onnx" (FORMATS' values) or "saved-model" (a folder)
    sha256: str  # of `path`
    keras_sha256: str | None  # of the .keras file `path` is (or was exported from); None: unknown
    named: Path  # what was asked for (a run directory's model-best.keras)
    run_dir: Path | None  # the run the model belongs to, or None for a bare file

    def describe(self) -> dict:
        """What outputs record about the model: the file used, its sha256, its .keras' sha256."""
        return {"model": str(self.path), "model_sha256": self.sha256,
                "keras_sha256": self.keras_sha256}


def resolve_model_file(model: str | Path | ModelFile | None, backend: str = "auto") -> ModelFile:
    """The file that answers for `model`, checked to be usable.

    Args:
      model: a run directory, a .keras or .tflite file, None for runs/latest, or a ModelFile
        (returned as it is).
      backend: "auto" (a .keras file's verified export when there is one, else the .keras),
        "keras" (the .keras itself) or "litert" (the verified export, or an error).

    Returns:
      The ModelFile: the path used, its format and sha256, the run directory.

    Raises:
      DigitnetError: no such run or model file, a .keras that is not a Keras archive, or (with
        backend "litert") no verified export.
    """
    if isinstance(model, ModelFile):
        return model
    if backend not in BACKENDS:
        raise DigitnetError(f"backend: expected one of {', '.join(BACKENDS)}, received {backend!r}")
    resolved = layout.resolve_model(model)
    named, run_dir = resolved.path, resolved.run_dir
    if named.is_dir():  # a SavedModel folder (digitnet export): its graph file identifies it
        sha256 = layout.file_sha256(named / layout.SAVED_MODEL_FILE)
        return ModelFile(named, "saved-model", sha256, None, named, run_dir)
    if named.suffix != layout.KERAS_SUFFIX:
        sha256 = layout.file_sha256(named)
        return ModelFile(named, FORMATS[named.suffix], sha256, None, named, run_dir)
    problem = keras_archive_problem(named)
    if problem:
        raise DigitnetError(f"{named}: cannot load Keras model ({problem})")
    keras_sha256 = layout.file_sha256(named)
    if backend != "keras":
        export = layout.litert_path(named)
        export_sha256 = layout.file_sha256(export) if export.is_file() else None
        problem = export_problem(export, export_sha256, keras_sha256)
        if problem is None:
            return ModelFile(export, "litert", export_sha256, keras_sha256, named, run_dir)
        if backend == "litert":
            raise DigitnetError(f"{export}: cannot answer for {named.name} ({problem})")
        if export.exists():  # an export that is not this model's: say why it is not used
            log.warning("%s: not used (%s); answering with %s", export, problem, named)
    return ModelFile(named, "keras", keras_sha256, keras_sha256, named, run_dir)


def keras_archive_problem(path: Path) -> str | None:
    """Why `path` is not a whole Keras model archive, or None if it is.

    A whole archive is a zip holding config.json whose members all pass their CRC check, and
    whose weights file, when it has one, is HDF5. Reading every member costs a few milliseconds
    for our models; it is what lets `digitnet runs` call a run with damaged weights broken
    instead of finished (its config alone would still load).
    """
    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
            weights = HDF5_SIGNATURE
            if damaged is None and KERAS_WEIGHTS in names:
                with archive.open(KERAS_WEIGHTS) as member:
                    weights = member.read(len(HDF5_SIGNATURE))
    # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
    except (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError):
        return "not a .keras zip archive"
    except OSError as error:
        return f"unreadable: {os_reason(error)}"
    if "config.json" not in names:
        return "no config.json in the .keras archive"
    if damaged is not None:
        return f"{damaged} in the .keras archive fails its CRC check"
    if weights != HDF5_SIGNATURE:
        return f"{KERAS_WEIGHTS} in the .keras archive is not HDF5"
    return None


def export_problem(export: Path, export_sha256: str | None, keras_sha256: str) -> str | None:
    """Why `export` (hashing to `export_sha256`; None: no such file) may not answer for the
    .keras file hashing to `keras_sha256`, or None."""
    if export_sha256 is None:
        return "no export"
    record = layout.export_record(export)
    if not record.is_file():
        return f"no {record.name} to say which .keras file it was exported from"
    try:
        recorded = layout.read_json(record)
    except DigitnetError:
        return f"{record.name} unreadable or corrupt"
    source = recorded.get("source") if isinstance(recorded, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("sha256"), str):
        return f"{record.name} does not record the sha256 of the .keras file it was exported " \
               f"from (an older digitnet wrote it)"
    if source["sha256"] != keras_sha256:
        return f"exported from another {export.with_suffix(layout.KERAS_SUFFIX).name} " \
               f"(its sha256 differs from {record.name})"
    if recorded.get("sha256") != export_sha256:
        return f"changed since it was exported (its sha256 differs from {record.name})"
    return None
