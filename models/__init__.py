"""The torch side: tokenizer training, networks, generation, PPO math, checkpoint I/O.

Nothing here knows about Prefect, MLflow or DVC; everything runs on CPU or CUDA alike.
"""
