"""revrel: Reveal and Release unlearning."""

__version__ = "0.1.0"
