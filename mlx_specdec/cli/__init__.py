"""The command-line interface: the only place that knows Typer and Rich."""
