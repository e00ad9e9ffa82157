"""The registry's names, light enough for the command line to import without PyTorch."""

DEFAULT_BACKBONE = "efficientnet_lite0"
SCRATCH_PREFIX = "scratch:"  # "scratch:<spec>": a CNN built from a spec (backbones/scratch.py)


def is_scratch(name: str) -> bool:
    """Whether ``name`` asks for a CNN built from a spec (``"scratch:<spec>"``), before building it."""
    return isinstance(name, str) and name.strip().lower().startswith(SCRATCH_PREFIX)
