"""charlm: character-level recurrent language models on PyTorch."""

__version__ = "0.2.0.dev0"


def load_exported(folder, device="cpu"):
    """A model exported with `charlm export --format safetensors` (charlm/inference/exported.py),
    built from its folder alone; the training code is not imported."""
    from charlm.inference.exported import load_exported as load

    return load(folder, device)
