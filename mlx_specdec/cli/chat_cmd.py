"""``mlx-specdec chat``: a terminal chat that shows speculative decoding at work, live."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..errors import UserError
from . import options as opts
from .chat_view import AnswerView, _share, sparkline, status_line
from .common import build_drafter, console, load_target, out

HELP = """[bold]/help[/]            this list
[bold]/method NAME[/]     switch the decoding method (the conversation and its cache are kept)
[bold]/temp T[/]          sampling temperature (0 = greedy)
[bold]/max-tokens N[/]    longest answer in tokens
[bold]/stats[/]           this session's statistics per method
[bold]/reset[/]           start a new conversation (the system prompt is kept)
[bold]/save FILE[/]       save the conversation as JSON;  [bold]/load FILE[/]  continue a saved one
[bold]/exit[/]            quit (Ctrl-D or Ctrl-C at the prompt too; Ctrl-C during an answer stops it)"""


def chat(
    model: opts.Model = None,
    method: Optional[str] = typer.Option(None, "--method", help="Decoding method: ar, pld, draft-model, lookahead, redrafter, triforce (default: redrafter on a GPU when a head ships for the model, else pld, the fastest on a CPU)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer in tokens (default 512)."),
    temp: Optional[float] = typer.Option(None, "--temp", help="Sampling temperature; 0 = greedy (the default)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keep only the k most likely tokens (0 = off)."),
    seed: opts.Seed = None,
    dtype: opts.Dtype = None,
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt."),
    show_drafts: bool = typer.Option(False, "--show-drafts", help="Colour the tokens that came from accepted drafts."),
    resume: bool = typer.Option(False, "--resume", help="Continue the last conversation (saved automatically after every turn)."),
    num_draft: opts.NumDraft = None,
    draft_model: opts.DraftModel = None,
    drafter: opts.DrafterPath = None,
    tree: opts.Tree = None,
    beam_width: opts.BeamWidth = None,
    beam_length: opts.BeamLength = None,
    tree_topk: opts.TreeTopk = None,
    tree_depth: opts.TreeDepth = None,
    tree_size: opts.TreeSize = None,
    lookup: opts.Lookup = None,
    window: opts.Window = None,
    ngram: opts.Ngram = None,
    guesses: opts.Guesses = None,
    budget: opts.KvBudget = None,
    chunk: opts.Chunk = None,
    sinks: opts.Sinks = None,
    gamma2: opts.Gamma2 = None,
):
    """Chat with a model; a status line shows tokens/s, tau and draft acceptance live. Type /help for commands."""
    from ..chat import ChatEngine, Conversation, latest_history, new_history_path

    conversation, history = Conversation(), new_history_path()
    if resume:
        last = latest_history()
        if last is None:
            console.print("[yellow]note:[/] no saved conversation to resume; starting a new one")
        else:
            conversation, history = Conversation.load(last), last
    settings = conversation.settings
    for key, value in dict(temp=temp, top_p=top_p, top_k=top_k, max_tokens=max_tokens).items():
        if value is not None:
            settings[key] = value
    if system is not None:
        conversation.system = system
    loaded = load_target(model, dtype)
    engine = ChatEngine(loaded, None, conversation, history, seed=seed)
    engine.params  # validates the sampling options before the first turn
    options = opts.method_options(num_draft, draft_model, drafter, tree, window, ngram, guesses,
                                   beam_width, beam_length, tree_topk, tree_depth, tree_size, lookup,
                                   kv_budget=budget, chunk=chunk, sinks=sinks, gamma2=gamma2)
    drafters = Drafters(loaded, engine, options)
    name = method or (settings["method"] if conversation.messages and drafters.available(settings["method"]) else None)
    if name is None:
        import mlx.core as mx

        from ..drafters import default_method

        name = default_method(mx.default_device().type == mx.DeviceType.gpu, lambda: drafters.available("redrafter"))
    engine.set_method(name, drafters.get(name))
    ChatUI(engine, drafters, show_drafts, loaded).run(resumed=resume and bool(conversation.messages))


class Drafters:
    """Drafters by method name, built once with the command's options."""

    def __init__(self, loaded, engine, options: dict):
        self.loaded, self.engine, self.options = loaded, engine, options
        self.built: dict[str, object] = {}

    def get(self, name: str):
        if name not in self.built:
            self.built[name] = build_drafter(name, self.loaded, self.engine.params, **self.options)
        return self.built[name]

    def available(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except (UserError, ImportError, KeyError):
            return False

    def params_changed(self) -> None:
        self.built.pop("draft-model", None)  # the only drafter that samples with the target's settings


class ChatUI:
    def __init__(self, engine, drafters: Drafters, show_drafts: bool, loaded):
        self.engine, self.drafters, self.show_drafts, self.loaded = engine, drafters, show_drafts, loaded
        self.interactive = sys.stdin.isatty()
        self.screen = Console(highlight=False) if out.is_terminal else None  # wraps lines itself, for Live
        self.prompt = "you> "
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())

                self.prompt = "\001\x1b[1;32m\002you>\001\x1b[0m\002 "
            except ImportError:
                pass

    def run(self, resumed: bool = False) -> None:
        engine = self.engine
        if self.interactive:
            console.print(f"[dim]{self.loaded.path.name} · {engine.method} · {self.loaded.dtype} · "
                          f"/help for commands, Ctrl-D to quit[/]")
        if resumed:
            self.show_transcript(f"resumed {engine.history_path}")
        while True:
            try:
                line = input(self.prompt) if self.interactive else sys.stdin.readline()
            except (EOFError, KeyboardInterrupt):
                line = None
            if line is None or (not self.interactive and line == ""):
                if self.interactive:
                    out.print()
                return
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return
                else:
                    self.answer(line)
            except UserError as e:
                console.print(f"[bold red]error:[/] {e}")
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/]")

    def command(self, line: str) -> bool:
        """Run a slash command; False means exit."""
        engine = self.engine
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit"):
            return False
        if name == "help":
            console.print(HELP)
        elif name == "method":
            from ..drafters import METHODS

            if not arg:
                console.print(f"method: {engine.method} (choose from: {', '.join(METHODS)})")
            else:
                engine.set_method(arg, self.drafters.get(arg))
                console.print(f"[dim]method: {arg} (cache kept)[/]")
        elif name == "temp":
            try:
                value = float(arg)
            except ValueError:
                raise UserError(f"/temp needs a number, e.g. /temp 0.7 (got {arg!r})") from None
            old = engine.conversation.settings["temp"]
            engine.conversation.settings["temp"] = value
            try:
                engine.params
            except UserError:
                engine.conversation.settings["temp"] = old
                raise
            self.drafters.params_changed()
            if engine.method == "draft-model":
                engine.set_method(engine.method, self.drafters.get(engine.method))
            console.print(f"[dim]temperature: {value}{' (greedy)' if value == 0 else ''}[/]")
        elif name == "max-tokens":
            if not arg.isdigit() or int(arg) < 1:
                raise UserError(f"/max-tokens needs a positive integer, e.g. /max-tokens 256 (got {arg!r})")
            engine.conversation.settings["max_tokens"] = int(arg)
            console.print(f"[dim]max tokens: {arg}[/]")
        elif name == "stats":
            console.print(self.stats_table())
        elif name == "reset":
            engine.reset()
            from ..chat import new_history_path

            engine.history_path = new_history_path()
            console.print("[dim]new conversation[/]")
        elif name in ("save", "load") and not arg:
            raise UserError(f"/{name} needs a file name, e.g. /{name} chat.json")
        elif name == "save":
            engine.conversation.save(arg)
            console.print(f"[dim]saved {len(engine.conversation.messages)} messages to {arg}[/]")
        elif name == "load":
            from ..chat import Conversation

            conversation = Conversation.load(arg)
            method = conversation.settings["method"]
            if method != engine.method and not self.drafters.available(method):
                console.print(f"[yellow]note:[/] method {method} is not available here; keeping {engine.method}")
                method = engine.method
            engine.load(conversation)
            engine.set_method(method, self.drafters.get(method))
            engine.autosave()
            self.show_transcript(f"loaded {arg}")
        else:
            console.print(f"unknown command {line.split()[0]!r}: type /help for the list")
        return True

    def show_transcript(self, what: str) -> None:
        messages = self.engine.conversation.messages
        console.print(f"[dim]{what}: {len(messages)} messages, method {self.engine.method}[/]")
        for m in messages:
            mark = " [yellow](interrupted)[/]" if m.get("interrupted") else ""
            console.print(f"[bold]{m['role']}:[/] {m['content']}{mark}", markup=True, highlight=False)

    def answer(self, text: str) -> None:
        engine = self.engine
        turn = engine.begin(text)
        if turn.dropped:
            console.print(f"[yellow]note:[/] the conversation no longer fits the model's context "
                          f"({engine.max_context} tokens): dropped the oldest {turn.dropped} messages (/reset starts over)")
        gen, view = turn.generation, AnswerView(self, turn)
        try:
            with closing(engine.stream(turn)) as pieces:
                if self.screen is not None:
                    with Live(view, console=self.screen, auto_refresh=False, transient=True) as live:
                        shown = 0.0
                        for piece, step in pieces:
                            view.add(piece, step)
                            if time.monotonic() - shown > 1 / 15 or step.finish:
                                live.refresh()
                                shown = time.monotonic()
                else:
                    for piece, _ in pieces:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
        except KeyboardInterrupt:
            engine.finish(turn)  # a no-op unless Ctrl-C came before the stream started
        if self.screen is not None:
            self.screen.print(view.text)
        else:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if turn.interrupted:
            console.print("[yellow](interrupted: the partial answer is kept)[/]")
        elif gen.finish == "length" and gen.stats.new_tokens < int(engine.conversation.settings["max_tokens"]):
            console.print("[yellow]note:[/] the answer reached the end of the model's context: /reset starts over")
        console.print(status_line(turn.method, gen.stats, engine.stats.get(turn.method)))
        if engine.save_error:
            console.print(f"[yellow]note:[/] {engine.save_error}")

    def stats_table(self) -> Table:
        table = Table(title="session statistics", title_justify="left", header_style="bold")
        for column in ("method", "answers", "tokens", "tok/s", "tau", "accepted", "by depth", "draft", "verify"):
            table.add_column(column, justify="left" if column in ("method", "by depth") else "right")
        for method, s in self.engine.stats.items():
            table.add_row(method, str(self.engine.answers[method]), str(s.new_tokens), f"{s.tokens_per_s:.1f}",
                          f"{s.tau:.2f}", f"{s.accepted}/{s.proposed}", sparkline(s.acceptance_by_depth) or "-",
                          _share(s.draft_s, s.decode_s), _share(s.verify_s, s.decode_s))
        if not self.engine.stats:
            table.add_row("-", "0", "0", "-", "-", "-", "-", "-", "-")
        return table
