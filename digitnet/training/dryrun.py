"""Check a config end to end without training: build the model, read the data, run one batch.

`dry_run(config, data_dir)` is what `digitnet train --dry-run` calls; it writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.config import Config
from digitnet.data import to_model_input


@dataclass(frozen=True)
class DryRun:
    """What a training run would start with."""

    device: str  # e.g. "CPU"
    summary: str  # Keras' model summary, one table
    parameters: int  # weights in the model
    trainable: int  # of which trained by the optimizer
    source: str  # where the data would be read from
    train_images: int
    val_images: int
    test_images: int


def dry_run(config: Config, data_dir: str | None = None, device: str = "auto",
            devices: int | None = 1) -> DryRun:
    """Build and compile the model, load and split the data, predict one batch; train nothing.

    Args:
      config: the checked run configuration.
      data_dir: an IDX folder or .npz, or None for $DIGITNET_DATA_DIR, the config, or a
        download.
      device: "auto", "cpu" or "gpu".
      devices: how many of them train data-parallel (None: all), as train would check them.

    Returns:
      The model's summary and size, and the data's source and split sizes.

    Raises:
      DigitnetError: bad or missing data, a batch larger than the training split, or an
        unavailable device.
    """
    from digitnet.training import backends
    from digitnet.training.devices import check_batch
    from digitnet.training.model import build_model
    from digitnet.training.train import compile_model, load_data

    placement = backends.current().select_devices(device, devices)
    check_batch(config.training.batch_size, config.training.outliers, len(placement.devices))
    data = load_data(config, data_dir, bank=False)  # the shapes only: no pipeline bank
    config, splits = data.config, data.splits
    model = build_model(config.model)
    compile_model(model, config.training, len(splits.x_train))
    model.predict(to_model_input(splits.x_train[:2]), verbose=0)  # the shapes fit end to end
    lines: list[str] = []
    model.summary(print_fn=lambda line, *_, **__: lines.append(line), line_length=80)
    trainable = sum(int(weight.numpy().size) for weight in model.trainable_weights)
    return DryRun(placement.description, "\n".join(lines), model.count_params(), trainable,
                  config.data.source, len(splits.x_train), len(splits.x_val), len(splits.x_test))
