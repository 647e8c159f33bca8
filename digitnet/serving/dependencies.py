"""What the routers depend on: the loaded model, its batcher and the settings (app.state).

Each is an `async def`: FastAPI runs a plain `def` dependency in its thread pool, and handing
three attribute reads to a thread and back cost more CPU than the rest of a 28x28 request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from digitnet.serving.batcher import DirectPredictor, MicroBatcher
from digitnet.serving.model import ServedModel
from digitnet.serving.settings import ServeSettings


async def get_model(request: Request) -> ServedModel:
    return request.app.state.model


async def get_predictor(request: Request) -> MicroBatcher | DirectPredictor:
    """The MicroBatcher (or, with batching off, the DirectPredictor) that runs the model."""
    return request.app.state.predictor


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


# for endpoint signatures: `model: Model` is the loaded model, and so on
Model = Annotated[ServedModel, Depends(get_model)]
Predictor = Annotated[MicroBatcher | DirectPredictor, Depends(get_predictor)]
Settings = Annotated[ServeSettings, Depends(get_settings)]
