"""salt: multi-modal, multi-task training of jet flavour taggers."""

__version__ = "0.1.0"
