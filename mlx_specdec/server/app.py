"""The FastAPI application: OpenAI's /v1/models, /v1/chat/completions, /v1/completions, and /health.

Each generation request is planned (tokenized and checked) on arrival, queued first-in first-out
on the one worker thread, and answered whole or as server-sent events (``data: [DONE]`` last). A
client that disconnects, while queued or mid-stream, cancels its job: the worker stops within one
step and serves the next request.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .engine import Engine, Failed, Finished, Piece
from .errors import APIError, error_response, install_error_handlers
from .memory import resident_bytes
from .responses import Format, sse
from .schemas import ChatRequest, CompletionRequest, GenerationFields
from .worker import Job, Worker

DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there


class ClientGone(Exception):
    pass


class BearerAuth:
    """ASGI middleware: /v1/* needs ``Authorization: Bearer <key>`` (checked before the body is read)."""

    def __init__(self, app, api_key: str):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                message = "invalid API key" if header else "missing API key: send the header 'Authorization: Bearer KEY'"
                await error_response(401, message, None, "invalid_api_key")(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def next_event(job: Job, request: Request):
    """The job's next event; raises ClientGone (and cancels the job) if the client disconnects
    (checked every DISCONNECT_POLL_S, also while events keep coming)."""
    while True:
        if time.monotonic() - job.checked >= DISCONNECT_POLL_S:
            job.checked = time.monotonic()
            if await request.is_disconnected():
                job.cancel()
                raise ClientGone
        try:
            return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            pass


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    worker = Worker()

    @asynccontextmanager
    async def lifespan(_):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="mlx-specdec", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.worker = engine, worker
    install_error_handlers(app)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)

    @app.get("/health")
    async def health():
        return dict(status="ok", model=engine.model_id, method=engine.method, busy=worker.busy, queued=worker.queued,
                    served=worker.served, cancelled=worker.cancelled, cached_tokens=len(engine.session.cached),
                    rss_bytes=resident_bytes())

    @app.get("/v1/models")
    async def models():
        card = dict(id=engine.model_id, object="model", created=int(time.time()), owned_by="mlx-specdec")
        return dict(object="list", data=[card])

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        plan = await run_in_threadpool(engine.plan_chat, body)
        return await answer(request, body, plan, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        plan = await run_in_threadpool(engine.plan_completion, body)
        return await answer(request, body, plan, chat=False)

    async def answer(request: Request, body: GenerationFields, plan, chat: bool) -> Response:
        fmt = Format(chat, engine.model_id, plan.ids, body.return_token_ids)
        job = Job(lambda j: engine.run(plan, j), asyncio.get_running_loop())
        worker.submit(job)
        try:
            first = await next_event(job, request)  # waits through the queue
            if isinstance(first, Failed):
                return first.error.response()
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                return StreamingResponse(stream(job, first, fmt, include_usage), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            event = first
            while not isinstance(event, Finished):
                if isinstance(event, Failed):
                    return event.error.response()
                event = await next_event(job, request)
            gen = event.generation
            return JSONResponse(fmt.whole(gen.text, gen.tokens, gen.finish, event.usage))
        except ClientGone:
            return Response(status_code=499)  # nobody reads it
        except BaseException:
            job.cancel()
            raise

    async def stream(job: Job, event, fmt: Format, include_usage: bool):
        try:
            if fmt.chat:
                yield sse(fmt.chunk(first=True))
            while True:
                if isinstance(event, Piece):
                    if event.text or (fmt.token_ids and event.tokens):
                        yield sse(fmt.chunk(event.text, event.tokens))
                elif isinstance(event, Finished):
                    yield sse(fmt.chunk(finish=event.generation.finish or "stop", tokens=[]))
                    if include_usage:
                        yield sse(fmt.usage_chunk(event.usage))
                    yield sse("[DONE]")
                    return
                elif isinstance(event, Failed):
                    e = event.error
                    yield sse({"error": {"message": e.message, "type": "server_error", "param": e.param, "code": e.code}})
                    yield sse("[DONE]")
                    return
                event = await job.events.get()
        finally:
            job.cancel()  # the client went away (or the stream ended): the worker stops within one step

    return app
