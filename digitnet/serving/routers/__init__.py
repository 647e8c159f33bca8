"""The server's endpoints by concern: `api` (JSON for programs), `page` (the drawing page)."""
