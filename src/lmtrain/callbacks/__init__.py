"""Our few Lightning callbacks (text samples, throughput); Lightning's own where they exist."""

from lmtrain.callbacks.samples import TextSamples

__all__ = ["TextSamples"]
