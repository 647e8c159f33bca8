"""The JSON API: POST /predict, GET /healthz, GET /model."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from digitnet.config import NUM_CLASSES
from digitnet.errors import DigitnetError
from digitnet.images.batch import preprocessed_pixels
from digitnet.images.decode import MAX_PIXELS, claimed_pixels, png_pixels
from digitnet.images.preprocess import preprocess_bytes
from digitnet.inference.predict import answers
from digitnet.serving.dependencies import Model, Predictor, Settings
from digitnet.serving.uploads import BODY_NAME, RequestError, Upload, read_uploads

router = APIRouter(tags=["api"])

# Uploads up to this many pixels in all, PNGs (the page's 280x280 canvas, MNIST-size files), are
# preprocessed on the event loop: a few milliseconds, less than handing them to a thread and
# back costs; larger ones, and other formats, in a thread, so that they do not hold up others.
INLINE_PIXELS = 100_000
# An upload claiming more pixels than this takes up to 1 GB to preprocess: such requests are
# preprocessed one at a time (app.state.large_images), others beside them as before.
LARGE_PIXELS = 8_000_000
# The images of one request claim at most this many pixels in all: 64 files of 7000x7000 (a
# 4 MB form) took minutes of CPU; more is refused (413) before any is decoded.
MAX_REQUEST_PIXELS = 4 * MAX_PIXELS

IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "image/png": IMAGE_BODY, "image/jpeg": IMAGE_BODY, "application/octet-stream": IMAGE_BODY,
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
ERROR = {"content": {"application/json": {"example": {"error": "request body: not an image "
                                                               "file (cannot identify image "
                                                               "format)"}}}}


@router.post("/predict", openapi_extra=PREDICT_BODY, responses={
    408: ERROR, 413: ERROR, 422: ERROR})
async def predict(request: Request, predictor: Predictor, settings: Settings,
                  top_k: Annotated[int, Query(ge=1, le=NUM_CLASSES)] = 3,
                  include_input: Annotated[bool, Query(alias="input")] = False) -> JSONResponse:
    """Predict the digit in one image (the request body) or in each file of a multipart form.

    The answer is what `digitnet predict --json` prints for each image (`file`, `digit` or
    "unknown", `probability`, `top_k`) plus all ten `probabilities`; `?input=true` adds the
    28x28 image the model saw (`input`, rows of 0-255). A body sent as the image is one object;
    a form gives a list, where a file that cannot be read is `{"file", "error"}`. An image that
    cannot be read (or a form of which none can) is 422 with `{"error": ...}`.
    """
    with predictor.expecting():
        uploads = await read_uploads(request.headers, request.stream(), settings.max_body,
                                     settings.max_files, settings.body_timeout)
        if small(uploads):
            arrays = preprocess_uploads(uploads)
        else:
            largest = claimed_largest(uploads)
            async with (request.app.state.large_images if largest > LARGE_PIXELS
                        else nullcontext()):
                arrays = await to_thread.run_sync(preprocess_uploads, uploads,
                                                  limiter=request.app.state.preprocessing)
    good = [array for array in arrays if not isinstance(array, DigitnetError)]
    if not good:
        raise RequestError(422, str(arrays[0]))
    probabilities = await predictor.predict(np.stack(good))
    found = iter(answer_objects(uploads, arrays, probabilities, top_k, settings.min_confidence,
                                settings.max_entropy, include_input))
    objects = [{"file": upload.name, "error": str(array)} if isinstance(array, DigitnetError)
               else next(found) for upload, array in zip(uploads, arrays)]
    is_form = request.headers.get("content-type", "").startswith("multipart/form-data")
    return JSONResponse(objects if is_form else objects[0])


def small(uploads: list[Upload]) -> bool:
    """Whether the uploads are PNGs of INLINE_PIXELS pixels or fewer in all (by their headers)."""
    total = 0
    for upload in uploads:
        pixels = png_pixels(upload.data)
        if pixels is None:
            return False
        total += pixels
    return total <= INLINE_PIXELS


def claimed_largest(uploads: list[Upload]) -> int:
    """The most pixels an upload's header claims.

    Raises:
      RequestError: 413 when they claim more than MAX_REQUEST_PIXELS in all.
    """
    claimed = [claimed_pixels(upload.data) for upload in uploads]
    if sum(claimed) > MAX_REQUEST_PIXELS:
        raise RequestError(413, f"{BODY_NAME}: images of {sum(claimed)} pixels in all, above "
                                f"this server's limit of {MAX_REQUEST_PIXELS} a request (send "
                                f"them in several)")
    return max(claimed)


def preprocess_uploads(uploads: list[Upload]) -> list:
    """Each upload as the (28, 28) array `digitnet predict` would make of the same file, or the
    DigitnetError saying why it cannot be used."""
    arrays = []
    for upload in uploads:
        try:
            arrays.append(preprocess_bytes(upload.data, upload.name))
        except DigitnetError as error:
            arrays.append(error)
    return arrays


def answer_objects(uploads: list[Upload], arrays: list, probabilities: np.ndarray, top_k: int,
                   min_confidence: float, max_entropy: float,
                   include_input: bool) -> list[dict]:
    """predict --json's object for each readable upload, with `probabilities` (and `input`)."""
    pairs = [(u, a) for u, a in zip(uploads, arrays) if not isinstance(a, DigitnetError)]
    found = answers([u.name for u, _ in pairs], probabilities, top_k, min_confidence,
                    [bool(a.any()) for _, a in pairs], max_entropy)
    objects = []
    for prediction, row, (_, array) in zip(found, probabilities.tolist(), pairs):
        item = prediction.to_json()
        item["probabilities"] = [round(p, 6) for p in row]
        if include_input:
            item["input"] = preprocessed_pixels(array).tolist()
        objects.append(item)
    return objects


@router.get("/healthz")
async def healthz(model: Model) -> JSONResponse:
    """200 once the model is loaded and has answered (it answers once at start-up)."""
    return JSONResponse({"status": "ok", "sha256": model.info["sha256"]})


@router.get("/model")
async def model_info(model: Model) -> JSONResponse:
    """The model served: run name, config name, test accuracy, file, backend, sha256, version."""
    return JSONResponse(model.info)
