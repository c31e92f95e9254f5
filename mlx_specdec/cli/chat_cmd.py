"""``mlx-specdec chat``: a terminal chat that shows speculative decoding at work, live."""

from __future__ import annotations

import dataclasses
import sys
import time
from contextlib import closing
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..errors import UserError
from ..method_options import MethodOptions
from . import options as opts
from .chat_view import LEGEND, AnswerView, _share, sparkline, status_line
from .common import build_drafter, console, load_target, out
from .ctrl_c import DeferredCtrlC

HELP = """[bold]/help[/]              this list
[bold]/method NAME[/]       switch the decoding method (conversation and cache are kept)
[bold]/draft-model PATH[/]  the draft model for /method draft-model
[bold]/temp T[/]            sampling temperature (0 = greedy)
[bold]/max-tokens N[/]      longest answer in tokens
[bold]/settings[/]          method, temperature, max tokens, draft model
[bold]/stats[/]             this session's statistics per method
[bold]/reset[/]             start a new conversation (the system prompt is kept)
[bold]/save FILE[/]         save the conversation as JSON
[bold]/load FILE[/]         continue a saved conversation
[bold]/exit[/]              quit (or Ctrl-D). Ctrl-C stops an answer; at the prompt it
                   clears the line, and a second Ctrl-C in a row quits

"""


@opts.with_method_options
def chat(
    model: opts.Model = None,
    method: Optional[str] = typer.Option(None, "--method", help="Decoding method: ar, pld, draft-model, lookahead, recycle, triforce, redrafter, eagle (default: redrafter when a head ships for the model, its tree merged with recycle's, the fastest measured; else recycle)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer in tokens (default 512)."),
    temp: Optional[float] = typer.Option(None, "--temp", help="Sampling temperature; 0 = greedy (the default)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keep only the k most likely tokens (0 = off)."),
    seed: opts.Seed = None,
    dtype: opts.Dtype = None,
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt."),
    show_drafts: bool = typer.Option(False, "--show-drafts", help="Colour the tokens that came from accepted drafts."),
    resume: bool = typer.Option(False, "--resume", help="Continue the last conversation (saved automatically after every turn)."),
    *,
    method_options: MethodOptions,
):
    """Chat with a model; a status line shows tokens/s, tau and draft acceptance live. Type /help for commands."""
    from ..chat import ChatEngine, Conversation, latest_history, new_history_path
    from ..drafters import METHODS

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
    if method_options.draft_model is None and settings.get("draft_model"):  # --resume: the draft model it had
        method_options = dataclasses.replace(method_options, draft_model=settings["draft_model"])
    settings["draft_model"] = method_options.draft_model
    loaded = load_target(model, dtype)
    engine = ChatEngine(loaded, None, conversation, history, seed=seed)
    engine.params  # validates the sampling options before the first turn
    drafters = Drafters(loaded, engine, method_options)
    name = method or (settings["method"] if conversation.messages and drafters.available(settings["method"]) else None)
    if name is None:
        from ..drafters import default_method

        name = default_method(lambda: drafters.available("redrafter"))
    method_options.check(*METHODS)  # only redrafter's tree shapes can contradict each other here
    unused = method_options.given().keys() - method_options.for_method(name).given().keys()
    if unused:  # kept for /method: the chat can switch methods
        console.print(f"[yellow]note:[/] {', '.join(MethodOptions.flag(k) for k in sorted(unused))} "
                      f"do{'es' if len(unused) == 1 else ''} not apply to {name}; used after /method")
    engine.set_method(name, drafters.get(name))
    ChatUI(engine, drafters, show_drafts, loaded).run(resumed=resume and bool(conversation.messages))


def say(*objects, **options) -> None:
    """Print for the chat's reader: wrapped at word boundaries to the terminal's width."""
    console.print(*objects, soft_wrap=False, **options)


class Drafters:
    """Drafters by method name, built once with the command's options."""

    def __init__(self, loaded, engine, options: MethodOptions):
        self.loaded, self.engine, self.options = loaded, engine, options
        self.built: dict[str, object] = {}

    def get(self, name: str):
        if name not in self.built:
            self.built[name] = build_drafter(name, self.loaded, self.engine.params, self.options)
        return self.built[name]

    def available(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except (UserError, ImportError, KeyError):
            return False

    def set_draft_model(self, path: str) -> None:
        """Use ``path`` for draft-model from now on (checked by loading it: a bad path changes nothing)."""
        options = dataclasses.replace(self.options, draft_model=MethodOptions.from_dict({"draft_model": path}).draft_model)
        drafter = build_drafter("draft-model", self.loaded, self.engine.params, options)
        self.options, self.built["draft-model"] = options, drafter
        self.engine.conversation.settings["draft_model"] = path

    def params_changed(self) -> None:
        self.built.pop("draft-model", None)  # the only drafter that samples with the target's settings


class ChatUI:
    def __init__(self, engine, drafters: Drafters, show_drafts: bool, loaded):
        self.engine, self.drafters, self.show_drafts, self.loaded = engine, drafters, show_drafts, loaded
        self.interactive = sys.stdin.isatty()
        self.screen = Console(highlight=False) if out.is_terminal else None  # wraps lines itself, for Live
        self.prompt = "you> "
        self.legend_shown = False
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())

                self.prompt = "\001\x1b[1;32m\002you>\001\x1b[0m\002 "
            except ImportError:
                pass

    def run(self, resumed: bool = False) -> None:
        engine = self.engine
        if self.interactive:
            say(f"[dim]{self.loaded.path.name} · {engine.method} · {self.loaded.dtype} · "
                          f"/help for commands, Ctrl-D to quit[/]")
        if resumed:
            self.show_transcript(f"resumed {engine.history_path}")
            say(f"[dim]restored settings:\n{escape(self.settings_text())}[/]")
        interrupts = 0  # Ctrl-C in a row at the prompt: the first clears the line, the second quits
        while True:
            try:
                line = input(self.prompt) if self.interactive else sys.stdin.readline()
            except EOFError:
                line = None
            except KeyboardInterrupt:
                interrupts += 1
                if self.interactive and interrupts == 1:
                    out.print()
                    say("[dim](Ctrl-C again or Ctrl-D to quit)[/]")
                    continue
                line = None
            else:
                interrupts = 0
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
                say(f"[bold red]error:[/] {escape(str(e))}")
            except KeyboardInterrupt:
                say("[yellow]interrupted[/]")

    def command(self, line: str) -> bool:
        """Run a slash command; False means exit."""
        engine = self.engine
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit"):
            return False
        if name == "help":
            say(HELP + escape(LEGEND))
        elif name == "method":
            from ..drafters import METHODS

            if not arg:
                say(f"method: {engine.method} (choose from: {', '.join(METHODS)})")
            else:
                engine.set_method(arg, self.drafters.get(arg))
                say(f"[dim]method: {arg} (cache kept)[/]")
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
            say(f"[dim]temperature: {value}{' (greedy)' if value == 0 else ''}[/]")
        elif name == "max-tokens":
            if not arg.isdigit() or int(arg) < 1:
                raise UserError(f"/max-tokens needs a positive integer, e.g. /max-tokens 256 (got {arg!r})")
            engine.conversation.settings["max_tokens"] = int(arg)
            say(f"[dim]max tokens: {arg}[/]")
        elif name == "settings":
            say(escape(self.settings_text()))
        elif name == "draft-model":
            if not arg:
                raise UserError("/draft-model needs a model directory or store name, e.g. /draft-model qwen2.5-coder-0.5b")
            self.drafters.set_draft_model(arg)
            if engine.method == "draft-model":
                engine.set_method(engine.method, self.drafters.get(engine.method))
            say(f"[dim]draft model: {escape(arg)}{'' if engine.method == 'draft-model' else ' (/method draft-model uses it)'}[/]")
        elif name == "stats":
            say(self.stats_table())
        elif name == "reset":
            engine.reset()
            from ..chat import new_history_path

            engine.history_path = new_history_path()
            say("[dim]new conversation[/]")
        elif name in ("save", "load") and not arg:
            raise UserError(f"/{name} needs a file name, e.g. /{name} chat.json")
        elif name == "save":
            engine.conversation.save(arg, create_folder=False)
            say(f"[dim]saved {len(engine.conversation.messages)} messages to {escape(arg)}[/]")
        elif name == "load":
            from ..chat import Conversation

            conversation = Conversation.load(arg)
            method = conversation.settings["method"]
            if method != engine.method and not self.drafters.available(method):
                say(f"[yellow]note:[/] method {method} is not available here; keeping {engine.method}")
                method = engine.method
            conversation.settings["draft_model"] = self.drafters.options.draft_model  # the chat's own
            engine.load(conversation)
            engine.set_method(method, self.drafters.get(method))
            engine.autosave()
            self.show_transcript(f"loaded {arg}")
        else:
            say(f"unknown command {line.split()[0]!r}: type /help for the list")
        return True

    def show_transcript(self, what: str) -> None:
        messages = self.engine.conversation.messages
        say(f"[dim]{escape(what)}: {len(messages)} messages, method {self.engine.method}[/]")
        for m in messages:
            mark = " [yellow](interrupted)[/]" if m.get("interrupted") else (" [yellow](cut at max tokens)[/]" if m.get("cut") else "")
            say(f"[bold]{m['role']}:[/] {escape(m['content'])}{mark}", highlight=False)

    def answer(self, text: str) -> None:
        engine = self.engine
        turn = engine.begin(text)
        if turn.dropped:
            say(f"[yellow]note:[/] the conversation no longer fits the model's context "
                          f"({engine.max_context} tokens): dropped the oldest {turn.dropped} messages (/reset starts over)")
        gen, view = turn.generation, AnswerView(self, turn)
        try:
            with DeferredCtrlC() as ctrl_c, closing(engine.stream(turn)) as pieces:
                if self.screen is not None:
                    with Live(view, console=self.screen, auto_refresh=False, transient=True) as live:
                        def prefilled(done: int, total: int) -> None:
                            view.prefilled(done, total)
                            live.refresh()
                            ctrl_c.check()

                        engine.session.prefill_progress = prefilled
                        shown = 0.0
                        for piece, step in pieces:
                            view.add(piece, step)
                            if time.monotonic() - shown > 1 / 15 or step.finish:
                                live.refresh()
                                shown = time.monotonic()
                            ctrl_c.check()
                else:
                    engine.session.prefill_progress = lambda done, total: ctrl_c.check()
                    for piece, _ in pieces:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                        ctrl_c.check()
        except KeyboardInterrupt:
            engine.finish(turn)  # a no-op unless Ctrl-C came before the stream started
        finally:
            engine.session.prefill_progress = None
        if self.screen is not None:
            self.screen.print(view.text)
        else:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if turn.interrupted:
            say("[yellow](interrupted: the partial answer is kept)[/]")
        elif gen.finish == "context":
            say("[yellow]note:[/] the answer reached the end of the model's context: /reset starts over")
        elif gen.finish == "length":
            say(f"[yellow](cut at max tokens: {gen.stats.new_tokens}; /max-tokens N allows longer answers)[/]")
        say(status_line(turn.method, gen.stats, engine.stats.get(turn.method), console.width))
        if self.interactive and not self.legend_shown:  # once per chat (piped output stays lean)
            say(f"[dim]{escape(LEGEND)}\n  (/help shows this again)[/]")
            self.legend_shown = True
        if engine.save_error:
            say(f"[yellow]note:[/] {engine.save_error}")

    def settings_text(self) -> str:
        s, engine = self.engine.conversation.settings, self.engine
        temp = float(s["temp"])
        draft = self.drafters.options.draft_model
        return (f"method {engine.method} · temperature {temp:g}{' (greedy)' if temp == 0 else ''} · top-p {float(s['top_p']):g} · "
                f"top-k {int(s['top_k']) or 'off'}" + (f" · seed {engine.seed}" if engine.seed is not None else "")
                + f"\nmax tokens {int(s['max_tokens'])} · draft model {draft or 'none (/draft-model PATH)'}")

    def stats_table(self) -> Table:
        from rich import box

        table = Table(title="session statistics", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      pad_edge=False, collapse_padding=True, caption="accepted: share of drafted tokens the model kept (by pos.: at draft position 1, 2, ...)",
                      caption_justify="left")
        for column in ("method", "answers", "tokens", "tok/s", "tau", "accepted", "by pos.", "draft", "verify"):
            table.add_column(column, justify="left" if column in ("method", "by pos.") else "right")
        for method, s in self.engine.stats.items():
            table.add_row(method, str(self.engine.answers[method]), str(s.new_tokens), f"{s.tokens_per_s:.1f}",
                          f"{s.tau:.2f}", _share(s.accepted, s.proposed), sparkline(s.acceptance_by_depth) or "-",
                          _share(s.draft_s, s.decode_s), _share(s.verify_s, s.decode_s))
        if not self.engine.stats:
            table.add_row("-", "0", "0", "-", "-", "-", "-", "-", "-")
        return table
