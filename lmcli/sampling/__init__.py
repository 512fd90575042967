"""Sampling: choosing the next token (choose.py), generating with a KV cache or a recurrent state
(generate.py), streaming text as it comes (stream.py), and opening a trained model (load.py)."""
