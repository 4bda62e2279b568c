# writer.pxi: what the writer process reads of the segment for its own loop, beside
# the ring's consumer side (meta.pxi: ring_read; ring.pxi: ring_idle_wait).


def expire_position(Store s):
    """(the stripe the next expiry cycle starts at, the number of stripes): the writer
    runs the cycle in short slices, draining the ring between them, and learns from
    the cursor when a slice has gone all the way round."""
    return s.hdr.expire_cursor % s.nstripes, s.nstripes
