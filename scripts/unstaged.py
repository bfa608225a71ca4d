"""Imported before train_gpt by device scripts that never pack an artifact, so that they run on a fresh GPU
machine before the wheels are staged: train_gpt imports zstandard at the top, for packing only."""

import sys
import types

try:
    import zstandard  # noqa: F401
except ImportError:
    sys.modules["zstandard"] = types.ModuleType("zstandard")
