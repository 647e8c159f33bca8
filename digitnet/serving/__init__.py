"""`digitnet serve`: a draw-a-digit page and an HTTP API over one loaded model.

Laid out like FastAPI's "Bigger Applications": `app.create_app` builds the application,
`routers/` holds the endpoints by concern (the JSON API, the page), `dependencies` hands them
the loaded model, and `server` runs it on uvicorn. Images go through the same decode and
to_mnist pipeline as `digitnet predict`, and answers through the same JSON; concurrent
requests share model calls (`batcher`). Nothing here imports TensorFlow unless the model is a
`.keras` file without its LiteRT export.
"""
