"""Frame sources: where a stream's frames come from."""

from infinipot.sources.base import FrameChunk, FrameSource, SourceInfo
from infinipot.sources.file import FileSource, open_file

__all__ = ["FileSource", "FrameChunk", "FrameSource", "SourceInfo", "open_file"]
