"""Compression codecs for repository objects.

zstd is the default: at its low levels it compresses WAL several-fold faster
than the disk can take the uncompressed bytes. The zstandard module is
imported only when a zstd object is actually written or read.
"""

from __future__ import annotations

from typing import Optional

from .errors import ConfigError, CorruptObject

CODECS = ("none", "zstd")
DEFAULT_CODEC = "zstd"
DEFAULT_LEVEL = 3
ZSTD_LEVELS = range(-7, 23)


def validate(codec: str, level: int) -> None:
    """Raise ConfigError for an unknown codec or an out-of-range level."""
    if codec not in CODECS:
        raise ConfigError("unknown compression %r" % codec, "use one of: %s" % ", ".join(CODECS))
    if codec == "zstd" and level not in ZSTD_LEVELS:
        raise ConfigError(
            "zstd compression_level %d is out of range" % level,
            "use a level from %d to %d (1-3 suit WAL)" % (ZSTD_LEVELS[0], ZSTD_LEVELS[-1]),
        )


def _zstandard():
    try:
        import zstandard
    except ImportError:
        from .hostdeps import missing_error

        raise missing_error(["zstandard"], "zstd compression") from None
    return zstandard


# Below this size a worker thread costs more than it saves.
_THREADED_MIN_SIZE = 1024 * 1024


def compress(data: bytes, codec: str, level: int, threads: Optional[int] = None) -> bytes:
    """One object's payload. By default (threads None) large ones (a 16 MiB
    WAL segment) are compressed on one zstd worker per core: on two cores
    that halves the time wal-push spends compressing (72 ms to 32 ms per
    segment at level 3, same size). A caller that already compresses several
    objects in parallel passes threads=0: worker threads would only add their
    own cost."""
    if codec == "none":
        return data
    if codec == "zstd":
        if threads is None:
            threads = -1 if len(data) >= _THREADED_MIN_SIZE else 0
        compressor = _zstandard().ZstdCompressor(level=level, write_content_size=True, write_checksum=True,
                                                 threads=threads)
        return compressor.compress(data)
    raise ConfigError("unknown compression %r" % codec)


def decompress(data: bytes, codec: str, expected_size: int) -> bytes:
    """Decompress, treating any decoder failure as corruption of the object."""
    if codec == "none":
        return data
    if codec == "zstd":
        zstandard = _zstandard()
        try:
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=expected_size)
        except zstandard.ZstdError as exc:
            raise CorruptObject("zstd payload cannot be decompressed: %s" % exc) from None
    raise CorruptObject("object uses unknown compression %r" % codec)


class StreamCompressor:
    """Compresses a stream chunk by chunk into a sink (a write function).

    zstd runs on `threads` worker threads (0: in the caller's thread; -1: one
    per core), so compression keeps pace with pg_basebackup on several cores.
    Every frame carries a content checksum: damage to a stored backup fails its
    decompression instead of reaching the tar reader as plausible bytes.
    """

    def __init__(self, sink, codec: str, level: int, threads: int = 0) -> None:
        self._sink = sink
        self._compressor = None
        if codec == "zstd":
            zstandard = _zstandard()
            self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=threads).compressobj(size=-1)
        elif codec != "none":
            raise ConfigError("unknown compression %r" % codec)

    def write(self, data: bytes) -> None:
        if self._compressor is None:
            self._sink(data)
            return
        out = self._compressor.compress(data)
        if out:
            self._sink(out)

    def finish(self) -> None:
        if self._compressor is not None:
            out = self._compressor.flush()
            if out:
                self._sink(out)


def open_decompressed(stream, codec: str):
    """A readable stream of the decompressed bytes of stream."""
    if codec == "none":
        return stream
    if codec == "zstd":
        return _zstandard().ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    raise CorruptObject("object uses unknown compression %r" % codec)
