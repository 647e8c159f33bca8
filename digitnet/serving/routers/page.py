"""The draw-a-digit page at / and its script and style, read once from the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

router = APIRouter(tags=["page"], include_in_schema=False)

ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}


@cache
def asset(name: str) -> bytes:
    """A file of digitnet/serving/static (only those in ASSETS: a request names no file)."""
    return resources.files("digitnet.serving").joinpath("static", name).read_bytes()


def asset_response(name: str) -> Response:
    return Response(asset(name), media_type=ASSETS[name],
                    headers={"cache-control": "no-cache"})


@router.get("/")
async def index() -> Response:
    """The page: draw a digit (or drop a photo) and watch the ten probabilities."""
    return asset_response("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise HTTPException(404)
    return asset_response(name)
