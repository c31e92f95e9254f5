"""A SentencePiece-BPE vocabulary in a GGUF (``tokenizer.ggml.model == "llama"``: Gemma, Llama 2,
Mistral) -> a ``tokenizers`` BPE, the same construction Hugging Face uses for such models.

The GGUF keeps the SentencePiece pieces, their scores and types, not merges. SentencePiece-BPE
merges, at each step, the adjacent pair whose concatenation is a piece with the highest score; a
BPE with one merge per (left, right) split of every piece, ranked by the piece's score, does the
same (``transformers``' ``SentencePieceExtractor``). Worked example: pieces ``▁t`` (-5), ``he``
(-7), ``▁the`` (-3), ``▁th`` (-9) give merges ``(▁t, he)`` [-3], ``(▁th, e)`` [-3], ``(▁t, h)`` [-5]
... best first. Spaces become ``▁`` (no dummy prefix when ``add_space_prefix`` is false), unknown
characters fall back to ``<0xNN>`` byte pieces. Token types are SentencePiece's: 1 normal,
2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Every (left, right) split of a normal piece into two pieces, ranked by the piece's score."""
    vocab = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    ranked = []
    for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
        if kind not in (NORMAL, USER_DEFINED) or vocab[piece] != i:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        splits.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        ranked.extend((-score, n, lr) for n, lr in enumerate(splits, start=len(ranked)))
    ranked.sort(key=lambda x: (x[0], x[1]))
    return [lr for _, _, lr in ranked]


def build_spm_tokenizer(tokens: list[str], scores: list[float], types: list[int], unk: str | None, add_space_prefix: bool) -> Tokenizer:
    vocab = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    bpe = models.BPE(vocab=vocab, merges=spm_merges(tokens, scores, types), unk_token=unk, fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(bpe)
    steps = [normalizers.Prepend("▁")] if add_space_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    control = [t for i, (t, k) in enumerate(zip(tokens, types)) if k in (CONTROL, UNKNOWN) and vocab[t] == i]
    user = [t for i, (t, k) in enumerate(zip(tokens, types)) if k == USER_DEFINED and vocab[t] == i]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])  # raw text, as llama.cpp and HF match them
    return tokenizer
