# The change feed's record header (bukt/feed.py: REC, "<QQqQqIIIIIHBB", 64 bytes), in C,
# for the compiled code on either side of the feed: the writer's packing
# (bukt/writer/_logscan.pyx: feed_write) and the watchers' parse (bukt/_feedread.pyx).
# Little-endian, as every machine Bukt runs on is. bukt/feed.py checks REC.size against
# it when it imports _feedread. A declaration only: cimporting it imports nothing.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef packed struct feed_rec:
    uint64_t pos
    uint64_t seq
    int64_t ms
    uint64_t version
    int64_t expire_ms
    uint32_t length
    uint32_t klen
    uint32_t vlen
    uint32_t vsize
    uint32_t gen
    uint16_t bucket
    uint8_t kind
    uint8_t flags
