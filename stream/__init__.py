"""framewire video: frames and their wire header, sources, H.264 codec, sinks, pipelines."""

from stream.codec import DecodedPicture, EncoderConfig, H264Decoder, H264Encoder
from stream.errors import FrameDecodeError, SourceEnded, StreamError, StreamUsageError
from stream.files import FileSink, FileSource
from stream.frames import HEADER_SIZE, MAX_DIMENSION, EncodedFrame, pack_frame, unpack_frame
from stream.pipeline import (
    FrameTransport,
    MessageLike,
    ReceiverStats,
    SenderStats,
    VideoReceiver,
    VideoSender,
)
from stream.sink import DiscardSink, Sink
from stream.source import SyntheticSource, VideoSource, YuvFrame
from stream.stamp import read_stamp, stamp_index
from stream.stats import percentiles

__all__ = [
    "HEADER_SIZE",
    "MAX_DIMENSION",
    "DecodedPicture",
    "DiscardSink",
    "EncodedFrame",
    "EncoderConfig",
    "FileSink",
    "FileSource",
    "FrameDecodeError",
    "FrameTransport",
    "H264Decoder",
    "H264Encoder",
    "MessageLike",
    "ReceiverStats",
    "SenderStats",
    "Sink",
    "SourceEnded",
    "StreamError",
    "StreamUsageError",
    "SyntheticSource",
    "VideoReceiver",
    "VideoSender",
    "VideoSource",
    "YuvFrame",
    "pack_frame",
    "percentiles",
    "read_stamp",
    "stamp_index",
    "unpack_frame",
]
