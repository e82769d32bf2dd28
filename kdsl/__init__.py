"""kdsl: a reward and constraint language with a compiler for reinforcement fine-tuning."""

from kdsl.errors import KdslError

__version__ = "0.1.0"
__all__ = ["KdslError", "__version__"]
