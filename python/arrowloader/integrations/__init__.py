"""Adapters for the frameworks that drive a training loop: Accelerate
(:mod:`arrowloader.integrations.accelerate`), the Hugging Face ``Trainer``
(:mod:`arrowloader.integrations.transformers`) and PyTorch Lightning
(:mod:`arrowloader.integrations.lightning`).

Each one hands the framework an :class:`arrowloader.DataLoader` that keeps its native path,
its split between ranks and its exact resumption. Importing this package imports none of
the frameworks; each module needs its own extra (``pip install "arrowloader[accelerate]"``,
``"arrowloader[hf]"``, ``"arrowloader[lightning]"``).
"""
