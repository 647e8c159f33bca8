"""What the routers depend on: the loaded model, its batcher and the settings (app.state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from digitnet.serving.batcher import DirectPredictor, MicroBatcher
from digitnet.serving.model import ServedModel
from digitnet.serving.settings import ServeSettings


def get_model(request: Request) -> ServedModel:
    return request.app.state.model


def get_predictor(request: Request) -> MicroBatcher | DirectPredictor:
    """The MicroBatcher (or, with batching off, the DirectPredictor) that runs the model."""
    return request.app.state.predictor


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


# for endpoint signatures: `model: Model` is the loaded model, and so on
Model = Annotated[ServedModel, Depends(get_model)]
Predictor = Annotated[MicroBatcher | DirectPredictor, Depends(get_predictor)]
Settings = Annotated[ServeSettings, Depends(get_settings)]
