"""The core's value hooks (bukt._core.set_value_hooks), registered when `bukt` is
imported, so every process that reads or writes the segment has them.

- store_large: a set of a value above the entry limit: an object (bukt/objects).
- decode: a read of an entry flagged MANIFEST: the object, read whole by bukt/objects;
  one flagged ZSTD or LZ4 goes to the codec (bukt/codec.py, fix/compress).
- compress: the codec's (fix/compress); without it, values are stored raw.
"""
from bukt import errors

__all__ = ["HOOKS", "register"]

FLAG_MANIFEST = 0x08


class ValueHooks:
    """The one hooks object the core calls (see the module docstring)."""

    def compress(self, bucket, value):
        return None

    def decode(self, bucket, key, value, flags):
        if flags & FLAG_MANIFEST:
            from bukt import objects
            return objects.decode_manifest(bucket, key, value, flags)
        raise errors.BuktError(f"key {key!r} holds a compressed value (flags {flags:#x}) "
                               "and this build has no codec")

    def check_large(self, bucket, size):
        """Raises what store_large would for a value of `size` bytes, before any write
        (Bucket.mset checks every value first)."""
        from bukt import objects
        objects.check_size(bucket, size)

    def store_large(self, bucket, key, value, ttl, nx, xx, single_read, if_version):
        from bukt import objects
        return objects.store_large(bucket, key, value, ttl, nx, xx, single_read, if_version)


HOOKS = ValueHooks()


def register():
    """Hand HOOKS to the core (idempotent)."""
    from bukt import _core
    setter = getattr(_core, "set_value_hooks", None)
    if setter is not None:
        setter(HOOKS)
