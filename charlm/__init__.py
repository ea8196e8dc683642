"""charlm: character-level recurrent language models on PyTorch."""

__version__ = "0.2.0.dev0"
