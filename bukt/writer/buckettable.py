"""The segment's bucket table as the writer process needs it.

The writer turns ring records into log records. A ring record names its bucket by slot
and generation (bucket_idx, bucket_gen); the log names it by name. META records in the
ring say which (idx, gen) is which name from the moment they are drained, but the writer
also needs the table as it stands when it starts (the buckets made before the ring's
tail), and a snapshot needs every token's hash: `store.bucket_table()` gives both, read
under the segment's meta lock.
"""
from typing import NamedTuple

__all__ = ["BucketSlot", "read_table"]


class BucketSlot(NamedTuple):
    idx: int
    gen: int
    state: int                 # 1 live, 2 dropping
    name: str
    schema: str
    eviction: str
    persist: bool
    default_ttl_ms: int
    tokens: tuple              # ((id, perms, hash bytes), ...)
    max_memory: int            # bytes of chunks, 0 = no limit
    compression: str = "none"  # none | zstd | lz4 (bukt/codec.py)
    comp_threshold: int = 0    # bytes: smaller values are stored raw
    comp_min_saving: int = 0   # percent: a smaller saving is stored raw

    @property
    def settings(self) -> dict:
        """As a BUCKET_CREATE record carries them (bukt/writer/aof.py)."""
        s = {"default_ttl": self.default_ttl_ms / 1000.0 if self.default_ttl_ms else None,
             "eviction": self.eviction, "persist": self.persist, "schema": self.schema}
        if self.max_memory:
            s["max_memory"] = self.max_memory      # (absent: no limit)
        if self.compression != "none":             # (absent: none)
            s.update(compression=self.compression,
                     compression_threshold=self.comp_threshold,
                     compression_min_saving=self.comp_min_saving)
        return s


def read_table(store) -> list:
    """The live and dropping buckets of `store`'s segment, as BucketSlots."""
    return [BucketSlot(*row) for row in store.bucket_table()]
