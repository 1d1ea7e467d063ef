"""Adapters for the frameworks that drive a training loop: Accelerate
(:mod:`arrowloader.integrations.accelerate`) and the Hugging Face ``Trainer``
(:mod:`arrowloader.integrations.transformers`). PyTorch Lightning needs none: it iterates
and checkpoints an :class:`arrowloader.DataLoader` as it is.

Each adapter hands the framework an :class:`arrowloader.DataLoader` that keeps its native
path, its split between ranks and its exact resumption. Importing this package imports
none of the frameworks; each module needs its extra (``pip install
"arrowloader[accelerate]"``, ``"arrowloader[hf,accelerate]"``).
"""
