# writer.pxi: what the writer process reads of the segment for its own loop, beside
# the ring's consumer side (meta.pxi: ring_read; ring.pxi: ring_idle_wait).


def expire_position(Store s):
    """(the stripe the next expiry cycle starts at, the number of stripes): the writer
    runs the cycle in short slices, draining the ring between them, and learns from
    the cursor when a slice has gone all the way round."""
    s._open()
    return s.hdr.expire_cursor % s.nstripes, s.nstripes


def writer_doorbell(Store s):
    """The doorbell word (cext/ring.pxi): 1 while the writer sleeps waiting for records;
    a producer under `fsync: always` sets it back to 0 when it rings. For tests and
    `bukt status`-style inspection."""
    s._open()
    return bk_load_acq32(&s.hdr.writer_sleeping)
