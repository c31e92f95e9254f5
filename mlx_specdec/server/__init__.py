"""An OpenAI-compatible HTTP server over the one generate loop (DESIGN.md §11).

``create_app(engine)`` builds the FastAPI application; ``serve(app, sock)`` runs it with uvicorn.
Requests are queued first-in first-out and served one at a time by a worker thread that owns the
model's :class:`~mlx_specdec.generate.Session` (so a follow-up chat request prefills only its new
tokens).
"""

from .app import create_app
from .engine import Engine
from .run import bind, serve

__all__ = ["Engine", "bind", "create_app", "serve"]
