"""Frame sources: where a stream's frames come from.

`open_source(spec, fps, …)` opens a file (PyAV), '-' (a container on stdin), a URL or a capture
device (ffmpeg); `Prefetched(source)` decodes it ahead in a background thread so decoding
overlaps the model. Every source follows the `FrameSource` protocol in `base`.
"""

from infinipot.sources.base import FrameChunk, FrameSource, SourceInfo
from infinipot.sources.ffmpeg_process import MISSING_FFMPEG
from infinipot.sources.file import FileSource, open_file
from infinipot.sources.live import LiveSource
from infinipot.sources.open import is_live_spec, open_source
from infinipot.sources.prefetch import Prefetched

__all__ = [
    "MISSING_FFMPEG", "FileSource", "FrameChunk", "FrameSource", "LiveSource", "Prefetched", "SourceInfo",
    "is_live_spec", "open_file", "open_source",
]
