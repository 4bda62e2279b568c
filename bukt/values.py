"""The core's value hooks: what a set or a read does with a value the core does not
store or return as is (bukt._core.set_value_hooks; registered when `bukt` is imported,
so every process that reads or writes the segment has them).

- compress: a set into a bucket with compression, of a value of at least the
  bucket's threshold, hands the value here; the codec (bukt/codec.py) returns the
  frame to store and its entry flag, or None to store the value raw.
- decode: a read of an entry flagged ZSTD or LZ4 hands its stored bytes here to be
  decompressed (IntegrityError when the frame is damaged); one flagged MANIFEST is an
  object (bukt/objects), read whole by that package.
- store_large: a set of a value above the entry limit: an object (bukt/objects).

bukt.objects is imported when a hook first needs it: `bukt` imports this module while
it is itself being imported.
"""
from bukt import codec
from bukt._core import ENTRY_MANIFEST

__all__ = ["HOOKS", "register"]


class ValueHooks:
    """The one hooks object the core calls (see the module docstring)."""

    def compress(self, bucket, value):
        return codec.compress(value, codec.code_of(bucket.compression),
                              bucket.comp_min_saving)

    def decode(self, bucket, key, value, flags):
        if flags & ENTRY_MANIFEST:
            from bukt import objects
            return objects.decode_manifest(bucket, key, value, flags)
        return codec.decode_entry(bucket, key, value, flags)

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
    _core.set_value_hooks(HOOKS)
