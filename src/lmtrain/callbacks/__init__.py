"""Our few Lightning callbacks (text samples, throughput, exact resume); Lightning's own where
they exist."""

from lmtrain.callbacks.resume import ExactResume
from lmtrain.callbacks.samples import TextSamples

__all__ = ["ExactResume", "TextSamples"]
