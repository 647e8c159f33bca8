"""The command line: parse, load the config, call one library function per command.

Nothing here imports TensorFlow at module level, so `--help` answers at once. Library errors
(DigitnetError) become `Error: ...` with exit status 1 and no traceback; usage errors (a bad
option or a missing argument) become one `Error: ...` line with exit status 2.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path

import click

from digitnet import __version__
from digitnet.backend import import_tensorflow_quietly, quiet_backend
from digitnet.config import BACKENDS, MAX_EPOCHS, MAX_SEED, NUM_CLASSES
from digitnet.errors import DigitnetError, InputError, one_line, os_reason
from digitnet.evaluation import SPLITS
from digitnet.export import FORMAT_NAMES
from digitnet.inference import DEFAULT_MAX_ENTROPY, DEFAULT_MIN_CONFIDENCE
from digitnet.training.devices import DEVICES
from digitnet.training.interrupt import TrainingInterrupted

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class EchoHandler(logging.Handler):
    """The library's log records on the terminal: progress to stdout, `Warning: ...` to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            click.echo(f"Warning: {record.getMessage()}", err=True)
        else:
            click.echo(record.getMessage())


def report_progress(quiet: bool = False) -> None:
    """Show the library's progress (INFO) unless `quiet`; warnings and errors always."""
    logger = logging.getLogger("digitnet")
    logger.handlers[:] = [EchoHandler()]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not logging.root.handlers:  # else absl's first log call (in a LiteRT export) gives root
        logging.root.addHandler(logging.NullHandler())  # a stderr handler: every record twice


def explicit(name: str, value):
    """`value` when given on the command line; None when it came from a DIGITNET_* variable.

    The library reads the variables itself, each in its place in the order of sources (resume
    prefers the run's own data to $DIGITNET_DATA_DIR); Click reads them only for --help and to
    check that the path exists.
    """
    source = click.get_current_context().get_parameter_source(name)
    return None if source == click.core.ParameterSource.ENVIRONMENT else value


# The flag each library input comes from (InputError.name), to word its errors.
FLAGS = {"device": "--device", "run directory": "--run-dir", "resumed run": "--resume",
         "split": "--split", "override": "--set", "output": "--output", "format": "--format",
         "storage": "--storage", "study": "--study", "devices": "--devices",
         "coordinator": "--coordinator", "process id": "--process-id",
         "number of processes": "--num-processes", "host": "--host"}


def cli_message(error: DigitnetError) -> str:
    """The library's error in the command line's words: the flag a value came from, and the
    command that resumes a run the error left resumable."""
    message = str(error)
    if isinstance(error, InputError) and error.name in FLAGS:
        message = f"{FLAGS[error.name]} {error.value}: {error.problem}"
    if error.resumable is not None:
        message += "" if message.endswith(".") else "."
        message += f" Resume with: digitnet train --resume {shlex.quote(str(error.resumable))}"
    return message


def user_errors(command):
    """Turn DigitnetError into a one-line ClickException at the CLI boundary."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as stop:  # not an error: the run is saved and resumable
            click.echo(cli_message(stop), err=True)
            raise click.exceptions.Exit(stop.exit_code) from None
        except DigitnetError as error:
            raise click.ClickException(one_line(cli_message(error))) from None

    return wrapper


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses nan and infinities (Click's compares nan as in range)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return number

    def _describe_range(self) -> str:  # Click's help would say "x<=None" for no bounds
        return "" if self.min is None and self.max is None else super()._describe_range()


MAX_WORKERS = 64  # serve --workers and sweep --jobs: a typo must not start thousands of processes


def non_empty(what: str):
    """A callback refusing an empty path ('' would silently mean the current folder)."""

    def check(ctx, param, value):
        if value == "":
            name = param.opts[0] if isinstance(param, click.Option) else param.name.upper()
            if isinstance(param, click.Argument) and param.metavar and " " not in param.metavar:
                name = param.metavar.strip("[]")  # as --help names it: [DIR]
            raise click.ClickException(f"{name} '': expected {what}, received an empty string")
        return value

    return check


class ClosedPipeSafe:
    """A text stream that, once its reader has gone (`digitnet train | head -1`), sends the
    rest of the output to os.devnull instead of failing: the command goes on quietly. Another
    write error (a full disk: `> /dev/full`) does the same, and `lost` keeps it for `main` to
    report once the command is done. A closed stream (`>&-`) is os.devnull from the start."""

    def __init__(self, stream):
        self._stream = stream if stream is not None else open(os.devnull, "w")  # noqa: SIM115
        self.lost: OSError | None = None

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as error:
            self._to_devnull(error)
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except OSError as error:
            self._to_devnull(error)

    def _to_devnull(self, error: OSError):
        if not isinstance(error, BrokenPipeError):
            self.lost = self.lost or error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # what is still buffered goes there too
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


data_dir_option = click.option(
    "--data-dir", type=click.Path(exists=True, file_okay=True), envvar="DIGITNET_DATA_DIR",
    show_envvar=True,
    help="MNIST as a folder of IDX files or an .npz [default: the run's source, else download "
         "into $DIGITNET_CACHE_DIR or ~/.cache/digitnet].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class OneLineErrors(click.Group):
    """A group whose usage errors are one line: the problem, then where help is."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:  # bare `digitnet`: the help
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            hint = f" Try '{error.ctx.command_path} --help'." if error.ctx else ""
            message = " ".join(error.format_message().split())  # Click lists choices on lines
            end = "" if message.endswith((".", "?", "!")) else "."
            click.echo(f"Error: {one_line(message)}{end}{hint}", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort as error:
            if isinstance(error.__cause__, KeyboardInterrupt):  # Ctrl-C: 130, as for train
                click.echo("Interrupted", err=True)
                sys.exit(130)
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group("digitnet", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="digitnet")
def cli():
    """Train, evaluate and use handwritten-digit classifiers (Keras 3 on TensorFlow).

    \b
    Quick start:
      digitnet train --config configs/default.yaml --data-dir ../shared/data/mnist
      digitnet evaluate
      digitnet predict my-digit.png

    \b
    Environment:
      DIGITNET_DATA_DIR   MNIST to read when --data-dir is not given
      DIGITNET_RUNS_DIR   where runs go and runs/latest lives [default: ./runs]
      DIGITNET_CACHE_DIR  where a downloaded MNIST is kept [default: ~/.cache/digitnet]

    \b
    Shell completion (bash; zsh_source and fish_source for the others):
      eval "$(_DIGITNET_COMPLETE=bash_source digitnet)"
    """
    report_progress()


@cli.command(context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config holding only what it changes (see configs/).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value; repeatable (e.g. --set training.seed=3).")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), help="Shortcut for training.epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Shortcut for training.batch_size.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help="Shortcut for training.seed.")
@click.option("--lr", "learning_rate", type=FiniteFloatRange(), metavar="RATE",
              help="Shortcut for training.learning_rate (the peak rate).")
@click.option("--run-dir", type=click.Path(file_okay=False), callback=non_empty("a folder path"),
              help="Directory for this run [default: runs/<timestamp>; $DIGITNET_RUNS_DIR "
                   "moves runs/].")
@data_dir_option
@click.option("--device", type=click.Choice(DEVICES), default="auto",
              show_default=True, help="gpu fails if TensorFlow sees none; auto prefers a GPU.")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="Shortcut for training.backend (Keras' engine) [default: tensorflow].")
@click.option("--devices", default="1", show_default=True, metavar="N|all",
              help="Train data-parallel on N devices of the --device kind, or all of them.")
@click.option("--coordinator", envvar="DIGITNET_COORDINATOR", metavar="HOST:PORT",
              help="Multi-process job (JAX): where process 0 listens [env DIGITNET_COORDINATOR].")
@click.option("--num-processes", type=click.IntRange(min=1), envvar="DIGITNET_NUM_PROCESSES",
              help="Processes in the job [env DIGITNET_NUM_PROCESSES].")
@click.option("--process-id", type=click.IntRange(min=0), envvar="DIGITNET_PROCESS_ID",
              help="This process, 0 .. N-1; 0 writes the run [env DIGITNET_PROCESS_ID].")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              metavar="RUN_DIR", help="Continue an interrupted run from its last completed epoch "
              "(with --epochs N: train it to N epochs).")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True,
              help="Log loss, accuracy and learning rate per epoch to RUN_DIR/tensorboard/.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config as YAML, every default included, and exit "
                   "(--config reads it back).")
@click.option("--dry-run", is_flag=True,
              help="Build the model, print its summary and parameter count, check the data; "
                   "train nothing and write no run directory.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress: print only the result line, warnings and errors.")
@user_errors
def train(config_file, overrides, epochs, batch_size, seed, learning_rate, run_dir, data_dir,
          device, backend, devices, coordinator, num_processes, process_id, resume_dir,
          tensorboard, print_config, dry_run, quiet):
    """Train a model and write a run directory.

    The run directory holds the resolved config, the best and last models, the per-epoch
    history, the final metrics and a manifest; runs/latest points at the newest run
    ($DIGITNET_RUNS_DIR moves runs/).
    Ctrl-C (or SIGTERM) stops at the next step and keeps the last completed epoch;
    --resume continues from it exactly.

    \b
    Examples:
      digitnet train --config configs/cnn.yaml --epochs 3 --lr 1e-3
      digitnet train --print-config > mine.yaml; digitnet train --config mine.yaml --dry-run
      digitnet train --resume runs/latest --epochs 8
      digitnet train --backend jax --devices all
      digitnet train --backend jax --run-dir /shared/runs/a --coordinator 10.0.0.1:1234 \\
          --num-processes 2 --process-id 0
    """
    from digitnet.config import load_config, save_config
    from digitnet.runs.layout import new_run_dir
    from digitnet.training import backends
    from digitnet.training.devices import parse_devices
    from digitnet.training.resume import resume_config

    global SKIP_TEARDOWN
    report_progress(quiet)
    if dry_run and (resume_dir or run_dir or print_config):
        other = "--resume" if resume_dir else "--run-dir" if run_dir else "--print-config"
        raise click.ClickException(f"--dry-run: not allowed with {other} (a dry run writes no "
                                   f"run directory)")
    if resume_dir and run_dir:
        raise click.ClickException("--run-dir: not allowed with --resume (a run resumes in its "
                                   "own directory)")
    shortcuts = {"training.epochs": epochs, "training.batch_size": batch_size,
                 "training.seed": seed, "training.learning_rate": learning_rate,
                 "training.backend": backend}
    if resume_dir:
        config = resume_config(resume_dir, config_file, overrides, shortcuts)
    else:
        config = load_config(config_file, overrides, shortcuts)
    device_count = parse_devices(devices)  # a bad --devices fails before anything is done
    if print_config:
        click.echo(save_config(config), nl=False)
        return
    if not resume_dir:  # the data loads while the backend imports (a resume may read another)
        from digitnet.data import prefetch_mnist, resolve_source

        prefetch_mnist(resolve_source(explicit("data_dir", data_dir), config.data.source))
    cluster = job_cluster(coordinator, num_processes, process_id, run_dir or resume_dir,
                          config.training.backend)
    backends.check_available(config.training.backend)  # before a converter imports TensorFlow
    if not dry_run and (cluster is None or cluster.writes):  # process 0 exports the model
        from digitnet.export.converter import start_early

        start_early(config.training.backend)  # JAX: TensorFlow imports there meanwhile
    backends.use(config.training.backend)
    if cluster is None:  # a job's processes check it after joining (JAX computes nothing before)
        from digitnet.training.model import check_model

        check_model(config.model, config.training.batch_size)  # before any run directory exists
    if dry_run:
        show_dry_run(config, explicit("data_dir", data_dir), device, device_count)
        return
    from digitnet.training.train import train_and_evaluate

    if resume_dir or (cluster and not cluster.writes):  # process 0 makes the run directory
        target = Path(resume_dir or run_dir)
    else:
        target = new_run_dir(run_dir)
    SKIP_TEARDOWN = True
    result = train_and_evaluate(config, target, explicit("data_dir", data_dir), device, sys.argv,
                                resume=bool(resume_dir), tensorboard=tensorboard,
                                devices=devices, cluster=cluster)
    metrics = result.metrics
    if not metrics:  # not process 0 of a job
        click.echo(f"Process {process_id} of {num_processes} done; process 0 saved the run to "
                   f"{result.run_dir}")
        return
    epochs = f"{metrics['epochs']} epoch" + ("" if metrics["epochs"] == 1 else "s")
    click.echo(f"Test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) "
               f"after {epochs} in {metrics['train_seconds']:.1f} s; run saved to "
               f"{result.run_dir}")


def job_cluster(coordinator, num_processes, process_id, run_dir, backend: str):
    """This process's place in a multi-process job, or None when no option names one."""
    from digitnet.training.cluster import make_cluster

    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}
    if all(value is None for value in given.values()):
        return None
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise click.ClickException(
            f"{', '.join(missing)}: expected with the other options of a multi-process job (or "
            f"DIGITNET_COORDINATOR, DIGITNET_NUM_PROCESSES, DIGITNET_PROCESS_ID)")
    if num_processes > 1 and run_dir is None:
        raise click.ClickException("--run-dir: expected for a multi-process job (every process "
                                   "names the same directory on a shared filesystem)")
    return make_cluster(coordinator, num_processes, process_id, backend)


def show_dry_run(config, data_dir: str | None, device: str, devices: int | None) -> None:
    """Print what `train` would start with: the model, its size and the data."""
    from digitnet.training.dryrun import dry_run

    checked = dry_run(config, data_dir, device, devices)
    click.echo(checked.summary)
    click.echo(f"Parameters: {checked.parameters:,} ({checked.trainable:,} trainable)")
    click.echo(f"Data: {checked.train_images:,} training, {checked.val_images:,} validation and "
               f"{checked.test_images:,} test images from {checked.source}")
    click.echo(f"Device: {checked.device}. Dry run: nothing trained, no run directory written.")


@cli.command(context_settings=CONTEXT)
@click.argument("run", required=False, type=click.Path(exists=True))
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
              help="test: the 10,000 test images; val: the run's held-out validation images.")
@data_dir_option
@json_option
@user_errors
def evaluate(run, split, data_dir, as_json):
    """Score a run's best model: accuracy, loss, per-class precision/recall/F1, confusion matrix.

    RUN is a run directory or a model file (.keras; or .tflite, .onnx or a SavedModel folder
    from `digitnet export`) [default: runs/latest, where $DIGITNET_RUNS_DIR moves runs/]. For
    a run's own model the report is also
    saved as evaluation-<split>.json in the run directory, and its plots (confusion matrices,
    per-digit accuracy, learning curves, most confident mistakes) as PNGs in RUN_DIR/plots/.

    \b
    Example:
      digitnet evaluate runs/latest --split val --json
    """
    quiet_backend()
    from digitnet.evaluation.evaluate import evaluate as evaluate_run
    from digitnet.evaluation.evaluate import format_report

    report = evaluate_run(run, split, explicit("data_dir", data_dir))
    click.echo(json.dumps(report) if as_json else format_report(report))


@cli.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True)
@click.option("--model", type=click.Path(exists=True),
              help="Run directory, .keras, .tflite or .onnx file, or SavedModel folder "
                   "[default: runs/latest; $DIGITNET_RUNS_DIR moves runs/].")
@click.option("--top-k", type=click.IntRange(1, NUM_CLASSES), default=3, show_default=True,
              help="How many of the most probable digits to show.")
@click.option("--min-confidence", type=FiniteFloatRange(0, 1), default=DEFAULT_MIN_CONFIDENCE,
              show_default=True, help="Below this top probability the answer is 'unknown'.")
@click.option("--max-entropy", type=FiniteFloatRange(0), default=DEFAULT_MAX_ENTROPY,
              show_default=True, help="Above this entropy of the ten probabilities (nats) the "
                                      "answer is 'unknown' too; 2.31 or more: never.")
@click.option("--save-preprocessed", type=click.Path(file_okay=False),
              callback=non_empty("a folder path"),
              help="Write the 28x28 image the model saw for each input into this folder.")
@json_option
@user_errors
def predict(images, model, top_k, min_confidence, max_entropy, save_preprocessed, as_json):
    """Predict the digit in each image.

    IMAGES are image files (PNG, JPEG, BMP, GIF, WebP, TIFF; any size and mode), folders
    (searched recursively) or '-' to read paths from stdin. A file that cannot be read gets a
    one-line error; the others are still predicted, and the exit status is 1 at the end.

    \b
    Example:
      digitnet predict photo.jpg drawings/ --top-k 2 --json
    """
    from digitnet.inference.predict import format_row
    from digitnet.inference.predict import predict as predict_images

    quiet_backend()
    failed = 0
    for count, prediction in enumerate(
            predict_images(images, model, top_k, min_confidence, save_preprocessed,
                           max_entropy)):
        failed += prediction.error is not None
        if count == 0 and not as_json:  # JSON names the model on every line
            click.echo(f"Model: {prediction.model}")
        if as_json:
            click.echo(json.dumps(prediction.to_json()))
        elif prediction.error is not None:
            click.echo(f"Error: {one_line(prediction.error)}", err=True)
        else:
            click.echo(format_row(prediction))
    if failed:
        raise click.exceptions.Exit(1)


@cli.command(context_settings=CONTEXT)
@click.argument("run", required=False, metavar="[RUN_DIR]", type=click.Path(exists=True))
@click.option("--format", "fmt", required=True, type=click.Choice(FORMAT_NAMES),
              help="saved-model: TF Serving and TensorFlow; onnx: ONNX Runtime (needs "
                   "'digitnet[onnx]'); litert: float .tflite; litert-int8: integer-only .tflite.")
@click.option("--output", type=click.Path(), callback=non_empty("a file or folder path"),
              help="Where to write it [default: beside the model: "
              "RUN_DIR/model-best-savedmodel/, .onnx, .tflite, -int8.tflite].")
@data_dir_option
@json_option
@user_errors
def export(run, fmt, output, data_dir, as_json):
    """Export a run's best model for another runtime, checked against it before it is kept.

    RUN_DIR is a run directory or a .keras file [default: runs/latest]. The export is run on
    the 10,000 test images and kept only if it agrees with the Keras model (float formats:
    every probability within 1e-5 and the same digit; litert-int8: test accuracy within 0.2
    points and at most 30% of the float file's size); otherwise nothing is written and the
    error says what differed. A JSON card beside it (<export>.json) describes the input and
    output, the test accuracy, the sha256 of the export and of the .keras file, and versions.

    \b
    Examples:
      digitnet export runs/latest --format onnx
      digitnet export --format litert-int8 --output phone/digits.tflite
    """
    import_tensorflow_quietly()
    from digitnet.export.pipeline import export_model, format_exported

    exported = export_model(run, fmt, output, explicit("data_dir", data_dir))
    click.echo(json.dumps(exported.card) if as_json else format_exported(exported))


@cli.command(context_settings=CONTEXT)
@click.argument("run_dir", required=False, metavar="[RUN_DIR]",
                callback=non_empty("a folder path"))
@data_dir_option
@user_errors
def report(run_dir, data_dir):
    """Write a run's HTML report page (RUN_DIR/report.html).

    The page is self-contained and holds the metrics, the learning curves, the confusion
    matrices, per-digit scores, the most confident mistakes, the config and the manifest; images
    are inlined, so it opens from the file with no network or server. A run not yet evaluated
    on the test images is evaluated first. RUN_DIR defaults to runs/latest ($DIGITNET_RUNS_DIR
    moves runs/).

    \b
    Example:
      digitnet report runs/latest
    """
    quiet_backend()
    from digitnet.data import DataError
    from digitnet.evaluation.report import write_report

    try:
        page = write_report(run_dir, explicit("data_dir", data_dir))
    except DataError as error:  # the run's data moved: say where to point the report
        raise DataError(f"{error} (the report evaluates the run first: pass --data-dir PATH "
                        f"or set $DIGITNET_DATA_DIR)") from None
    click.echo(f"Report written to {page}")


@cli.command(context_settings=CONTEXT)
@click.argument("folder", required=False, metavar="[DIR]",
                callback=non_empty("a folder path"))
@json_option
@user_errors
def runs(folder, as_json):
    """List the runs in DIR (default runs/, or $DIGITNET_RUNS_DIR), newest first.

    Shows each run's status (finished, running, interrupted, failed, or broken with what is
    wrong), config name, epochs, test accuracy, training time and start date.

    \b
    Example:
      digitnet runs --json
    """
    from digitnet.runs.listing import format_runs, list_runs

    listed = list_runs(folder)
    click.echo(json.dumps(listed) if as_json else format_runs(listed, folder))


class ByteSize(click.ParamType):
    """A size in bytes written as 10MB, 512KiB or 1000000."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from digitnet.serving.settings import parse_size

        try:
            return value if isinstance(value, int) else parse_size(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


@cli.command(context_settings=CONTEXT)
@click.argument("model", required=False, metavar="[RUN_DIR | MODEL]",
                callback=non_empty("a run folder or model file path"))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, reachable from others).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port; the URL printed says which).")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help="Processes answering requests, each with its own copy of the model.")
@click.option("--max-body", type=ByteSize(), default="10MB", show_default=True,
              help="Largest request body; a larger one gets 413 before it is read.")
@click.option("--min-confidence", type=FiniteFloatRange(0, 1), default=None,
              help="Below this top probability the answer is 'unknown' "
                   f"[default: {DEFAULT_MIN_CONFIDENCE}, as predict].")
@click.option("--max-entropy", type=FiniteFloatRange(0), default=None,
              help="Above this entropy of the ten probabilities (nats) the answer is 'unknown' "
                   f"too [default: {DEFAULT_MAX_ENTROPY}, as predict].")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Answer concurrent requests with one model call (off: one call each).")
@user_errors
def serve(model, host, port, workers, max_body, min_confidence, max_entropy, batching):
    """Serve a draw-a-digit page and an HTTP API for a run's model.

    MODEL is a run directory, a .keras, .tflite or .onnx file [default: runs/latest]; a run is
    served by its LiteRT export, without importing TensorFlow. Open the printed URL to draw
    a digit; programs POST images to /predict (see docs/serve.md). Ctrl-C or SIGTERM stops
    accepting, finishes the requests in flight and exits 0.

    \b
    Examples:
      digitnet serve runs/latest --port 8000
      curl -s --data-binary @digit.png http://127.0.0.1:8000/predict
    """
    from digitnet.serving.settings import ServeSettings, check_host

    check_host(host)  # refused before the server's imports (cv2, uvicorn, fastapi: ~1 s)
    from digitnet.serving.server import serve as run_server

    threshold = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    entropy = DEFAULT_MAX_ENTROPY if max_entropy is None else max_entropy
    settings = ServeSettings(max_body=max_body, min_confidence=threshold, max_entropy=entropy,
                             batching=batching)
    run_server(model, host, port, workers, settings, announce=lambda line: click.echo(line))


@cli.command(context_settings=CONTEXT)
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1),
              help="Trials in the whole study, over every worker [default: the file's trials].")
@click.option("--jobs", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help="Worker processes on this machine, each training one trial at a time.")
@click.option("--storage", metavar="URL",
              help="A database that many machines share, e.g. postgresql://user:pw@host/db "
                   "[default: sqlite in runs/<sweep>/study.db].")
@click.option("--study", "study_name", metavar="NAME",
              help="The study to create or continue; its trials go to runs/NAME/ [default: "
                   "the sweep's name].")
@data_dir_option
@user_errors
def sweep(sweep_file, trials, jobs, storage, study_name, data_dir):
    """Search hyperparameters with Optuna: every trial is a run in runs/<sweep>/trial-NNNN/.

    A row per trial is printed as it finishes; at the end runs/<sweep>/best.yaml holds the best
    config (for `digitnet train --config`) and runs/<sweep>/sweep.html the report page. Ctrl-C
    stops cleanly and the same command continues the study; with --storage, workers on any
    number of machines share one study. See docs/sweep.md for the sweep file.

    \b
    Examples:
      digitnet sweep configs/sweeps/default-mlp.yaml --trials 30
      digitnet sweep configs/sweeps/cnn.yaml --jobs 2 --storage postgresql://me:pw@db/sweeps
    """
    from digitnet.sweep.spec import load_sweep, study_name_of

    spec = load_sweep(sweep_file, trials)  # a bad file or --study is refused before the
    study_name_of(spec, study_name)  # seconds of importing TensorFlow, Keras and JAX
    import_tensorflow_quietly()
    from digitnet.sweep.runner import run_sweep

    result = run_sweep(sweep_file, trials, jobs, storage, study_name, data_dir, spec)
    best = result.best
    if best is None:
        click.echo(f"No trial completed; report: {result.report}")
        return
    click.echo(f"Best: trial {best['number']}, val accuracy {best['value']:.4f} "
               f"({best['run_dir']}); config: {result.best_config}; report: {result.report}")


# Set by `train` just before it trains: from then on its process leaves without the
# interpreter's teardown (`leave`), whether the run finished, failed or was interrupted (tearing
# TensorFlow or JAX down took 0.3-1 s). A finished run's files are written and synced by then; a
# failed or interrupted one has marked state.json and its `Error:` line is printed; the atexit
# handlers still run (the LiteRT converter is ended).
SKIP_TEARDOWN = False


def leave(code: int | None) -> None:
    """Exit with `code` now: the atexit handlers run (an unused LiteRT converter is ended, a JAX
    job is left), the interpreter's teardown does not."""
    # CPython's own (undocumented) step of a normal exit: nothing public runs the handlers and
    # then skips the rest. An os._exit handler registered first, to run last, would skip the
    # handlers registered before it (on importing the libraries cli.py imports), and a normal
    # exit joins every non-daemon thread before any handler runs (tests/test_converter.py
    # checks that `digitnet train` ends its unused converter through this call).
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def stop_workers() -> None:
    """Stop the preprocessing processes (predict's, serve's) here, in the main thread, before
    the interpreter's exit would: on Python 3.11 its concurrent.futures hook wakes each pool's
    manager thread without the lock under which that thread, woken by a result, closes the
    wake-up pipe, and a pool still busy at Ctrl-C could then end the command with
    "Exception ignored in: <module 'threading'> ... OSError: [Errno 9] Bad file descriptor"."""
    batch = sys.modules.get("digitnet.images.batch")  # loaded only where images were read
    if batch is not None:
        batch.close_pools()


def main() -> None:
    """Console-script entry point."""
    sys.stdout, sys.stderr = ClosedPipeSafe(sys.stdout), ClosedPipeSafe(sys.stderr)
    try:
        cli(prog_name="digitnet")
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    stop_workers()
    sys.stdout.flush()
    lost = sys.stdout.lost
    if lost is not None:  # the output was not all written: never exit 0 on it
        click.echo(f"Error: standard output: cannot write ({os_reason(lost)}); output lost",
                   err=True)
        code = code if code not in (0, None) else 1
    if SKIP_TEARDOWN and isinstance(code, int | None):
        leave(code)
    sys.exit(code)
