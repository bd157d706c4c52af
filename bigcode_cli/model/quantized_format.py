"""The version of the stored form of quantized weights (the packed layout and the state's keys), written once.

Torch-free: the store reads it to tell a kept copy of this format from an older one without importing torch.
"""

from __future__ import annotations

# bump when model/quantize.py's packed layout or quantized_loading's state keys change: kept copies of another
# version are then ignored and made again
FORMAT_VERSION = 1
