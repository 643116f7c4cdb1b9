"""cas_edu: learn and reproduce Channel-wise Activation Suppressing (Bai et al., ICLR 2021)."""
from .checkpoint import load_checkpoint

__version__ = "0.1.0"
__all__ = ["load_checkpoint", "__version__"]
