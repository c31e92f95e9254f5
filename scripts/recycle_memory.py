"""What recycle's two training-free sources hold in memory: the Token Recycling table and the suffix
automaton, for each model's vocabulary and tokenizer.

    python scripts/recycle_memory.py                       # the default model
    python scripts/recycle_memory.py -m qwen2.5-coder-1.5b  # a pulled or converted model

The table is a fixed (V, 8) array pair (:attr:`~mlx_specdec.drafters.adjacency.AdjacencyTable.nbytes`).
The automaton grows with the history it indexes (prompt, earlier turns, answers), not with the
vocabulary, so it is measured (``tracemalloc``: every Python object it allocates) over the first
1K / 4K / 16K tokens of the public-domain long documents in ``../shared/data/longctx`` (their
concatenation when one is shorter), tokenized by the model's own tokenizer.
"""

from __future__ import annotations

import argparse
import json
import tracemalloc

from mlx_specdec.drafters.adjacency import AdjacencyTable
from mlx_specdec.drafters.suffix_automaton import SuffixAutomaton

LENGTHS = (1024, 4096, 16384)


def automaton_bytes(tokens: list[int]) -> int:
    """Bytes allocated while building an automaton over ``tokens`` and still held by it."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sam = SuffixAutomaton(tokens)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del sam
    return held


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", default=None, help="model name or directory (default: the default model)")
    args = parser.parse_args()
    from mlx_specdec.long_context import default_longctx_file
    from mlx_specdec.store import default_model_dir, resolve_model
    from mlx_specdec.tokenizer import Tokenizer

    model_dir = default_model_dir() if args.model is None else resolve_model(args.model)
    tokenizer = Tokenizer(model_dir)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]  # the table's rows: the model's
    print(f"{model_dir.name}: vocabulary {vocab:,}; table {AdjacencyTable(vocab).nbytes / 1e6:.1f} MB (k = 8)")
    documents = sorted((default_longctx_file().parent / "documents").glob("*.txt"))
    tokens: list[int] = []
    for path in documents:
        tokens += tokenizer.encode(path.read_text(encoding="utf-8"))
        if len(tokens) >= max(LENGTHS):
            break
    for n in LENGTHS:
        if n <= len(tokens):
            held = automaton_bytes(tokens[:n])
            print(f"automaton over {n:,} tokens: {held / 1e6:.1f} MB ({held / n:.0f} bytes a token)")


if __name__ == "__main__":
    main()
