"""What a request asks of the model, and how the worker thread answers it.

The engine owns the model's one :class:`Session`: successive requests reuse the cached prefix
they share (a chat client resends the whole history, so a follow-up prefills only its new tokens).
It runs only on the worker thread, one request at a time; ``plan`` (tokenizing, checks) runs
before the request is queued, so bad input is answered without waiting for the queue.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError
from ..generate import Session
from ..sampling import SamplingParams
from ..textgen import Generation, stream_text
from .errors import APIError
from .methods import request_method
from .schemas import ChatRequest, CompletionRequest, GenerationFields
from .worker import Job

log = logging.getLogger("mlx_specdec.server")
DRAFTERS_KEPT = 8  # ReDrafter drafters kept for reuse (a request's options are the key)
KEPT_METHODS = {"redrafter"}  # loads a head and sizes its tree; the others are built per request, as generate
                              # does, so a seeded request repeats `generate --seed` (their drafts use an rng)


@dataclass
class Plan:
    """One request, ready for the worker."""

    ids: list[int]
    method: str
    options: dict
    params: SamplingParams
    max_tokens: int
    stop: list[str]
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class Piece:
    text: str
    tokens: list[int]


@dataclass
class Finished:
    generation: Generation
    usage: dict


@dataclass
class Failed:
    error: APIError


class Engine:
    """A loaded model, its Session, the server's defaults and a drafter factory.

    ``build_drafter(method, params, options)`` makes a drafter (the CLI passes its own, so that
    this module stays free of Rich); ``options`` are ``method_options`` keywords.
    """

    def __init__(self, loaded, build_drafter: Callable, method: str = "ar", options: dict | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, max_tokens: int = 512,
                 model_name: str | None = None):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.session = Session(loaded.model, loaded.max_context)
        self.build_drafter = build_drafter
        self.method, self.options = method, dict(options or {})
        self.defaults = dict(temperature=temperature, top_p=top_p, top_k=top_k)
        self.max_tokens = max_tokens
        self.model_id = model_name or loaded.path.name
        self._drafters: OrderedDict = OrderedDict()

    def check_model(self, name: str | None) -> None:
        if name not in (None, "", self.model_id, str(self.loaded.path), self.loaded.path.name):
            raise APIError(404, f"the model {name!r} does not exist: this server serves {self.model_id!r}",
                           "model", "model_not_found")

    def plan_chat(self, body: ChatRequest) -> Plan:
        self.check_model(body.model)
        try:
            ids = self.tokenizer.chat_ids(body.template_messages())
        except UserError as e:
            raise APIError(400, str(e), "messages") from None
        return self._plan(body, ids)

    def plan_completion(self, body: CompletionRequest) -> Plan:
        self.check_model(body.model)
        text = body.prompt_text()
        if text is None:
            raise APIError(400, "prompt: exactly one prompt string per request is supported", "prompt")
        return self._plan(body, self.tokenizer.encode(text, add_special_tokens=True))

    def _plan(self, body: GenerationFields, ids: list[int]) -> Plan:
        if not ids:
            raise APIError(400, "the prompt is empty", "prompt")
        context = self.loaded.max_context
        if context and len(ids) >= context:
            raise APIError(400, f"this model's maximum context length is {context} tokens, but the prompt has "
                                f"{len(ids)} tokens", "messages" if isinstance(body, ChatRequest) else "prompt",
                           "context_length_exceeded")
        sampling = {k: getattr(body, k) for k in self.defaults if getattr(body, k) is not None}
        try:
            params = SamplingParams(**{**self.defaults, **sampling}, seed=body.seed)
        except UserError as e:
            raise APIError(400, str(e), None, "invalid_value") from None
        method, options = request_method(body, self.method, self.options)
        max_tokens = body.max_completion_tokens or body.max_tokens or self.max_tokens
        return Plan(ids, method, options, params, max_tokens, body.stop_strings)

    def run(self, plan: Plan, job: Job) -> None:
        """Generate for ``plan`` on the worker thread, emitting Piece events then Finished (or Failed)."""
        started = time.perf_counter()
        try:
            drafter = self._drafter(plan)
            result = Generation(list(plan.ids))
            steps = stream_text(self.session, self.tokenizer, plan.ids, drafter, plan.params, plan.max_tokens,
                                plan.stop, result)
            try:
                for piece, step in steps:
                    job.emit(Piece(piece, step.tokens))
                    if job.cancelled.is_set():
                        break
            finally:
                steps.close()  # the Session truncates its cache to what it holds
            job.emit(Finished(result, self.usage(plan, result, started - plan.submitted)))
        except APIError as e:
            job.emit(Failed(e))
        except UserError as e:
            job.emit(Failed(APIError(400, str(e))))
        except Exception as e:
            log.exception("generation failed")
            job.emit(Failed(APIError(500, f"generation failed: {type(e).__name__}: {e}")))

    def _drafter(self, plan: Plan):
        if plan.method not in KEPT_METHODS:
            return self.build_drafter(plan.method, plan.params, plan.options)
        key = (plan.method, tuple(sorted(plan.options.items())))
        if key not in self._drafters:
            self._drafters[key] = self.build_drafter(plan.method, plan.params, plan.options)
            while len(self._drafters) > DRAFTERS_KEPT:
                self._drafters.popitem(last=False)
        self._drafters.move_to_end(key)
        return self._drafters[key]

    @staticmethod
    def usage(plan: Plan, result: Generation, queued_s: float) -> dict:
        """OpenAI's usage counts plus ``speculative``: the method, its statistics and the cache reuse."""
        stats = result.stats.to_dict()
        reused = len(plan.ids) - result.stats.prefill_tokens
        speculative = dict(method=plan.method, **stats, reused_tokens=reused, cache_reused=reused > 0,
                           queued_s=round(queued_s, 4))
        return dict(prompt_tokens=len(plan.ids), completion_tokens=len(result.tokens),
                    total_tokens=len(plan.ids) + len(result.tokens), speculative=speculative)
