"""DAEFR: Dual Associated Encoder for Face Restoration (ICLR 2024), reference implementation."""

from daefr.checkpoint import CheckpointError, load_model
from daefr.config import PRESETS, DAEFRConfig, VQGANConfig
from daefr.model import DAEFR, Restoration

__all__ = ["DAEFR", "PRESETS", "CheckpointError", "DAEFRConfig", "Restoration", "VQGANConfig", "load_model"]
__version__ = "0.1.0"
