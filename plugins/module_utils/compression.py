"""Compression codecs for repository objects.

zstd is the default: at its low levels it compresses WAL several-fold faster
than the disk can take the uncompressed bytes. The zstandard module is
imported only when a zstd object is actually written or read.
"""

from __future__ import annotations

from .errors import ConfigError, CorruptObject, RestorekeeperError

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
        raise RestorekeeperError(
            "the Python module zstandard is not installed",
            "install restorekeeper's on-host requirements (pip install zstandard) or set compression = none",
        ) from None
    return zstandard


def compress(data: bytes, codec: str, level: int) -> bytes:
    if codec == "none":
        return data
    if codec == "zstd":
        return _zstandard().ZstdCompressor(level=level, write_content_size=True).compress(data)
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
