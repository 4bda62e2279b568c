# feedmem.pxi: the few memory operations the change feed (bukt/feed.py) needs on its
# own shared area, which is mapped by Python's mmap: ordered loads and stores of the
# words that publish records (head, low, lost), and the futex its watchers sleep on.
# Python's own buffer reads and writes carry no ordering; these do (acquire/release,
# as design.md invariant 2 asks), so the feed's protocol holds on aarch64 as on x86.


cdef inline uint64_t *_word(const unsigned char[::1] buf, size_t off) except NULL:
    if off % 8 or off + 8 > <size_t>buf.shape[0]:
        raise _err.InvalidArgument(f"word offset {off} outside the area")
    return <uint64_t *>&buf[off]


def feed_store(const unsigned char[::1] buf, size_t off, uint64_t value):
    """Store the u64 at `off` with release ordering (the area's one writer)."""
    bk_store_rel64(_word(buf, off), value)


def feed_fence():
    """A full fence: a reader's copy of a record is done before it looks at low again;
    a writer's raise of low is seen before the bytes it then overwrites."""
    bk_fence_full()


def feed_wake(const unsigned char[::1] buf, size_t off):
    """Bump the u32 at `off` and wake everyone asleep on it."""
    cdef uint32_t *w = <uint32_t *>_word(buf, off)
    bk_inc32(w)
    bk_futex_wake(w)


def feed_wait(const unsigned char[::1] buf, size_t off, uint32_t seen, double timeout):
    """Sleep (without the GIL) until the u32 at `off` is no longer `seen`, a wake, or
    `timeout` seconds; returns the word's value then."""
    cdef uint32_t *w = <uint32_t *>_word(buf, off)
    cdef long ns = <long>(timeout * 1e9) if timeout > 0 else 0
    if bk_load_acq32(w) == seen and ns > 0:
        with nogil:
            bk_futex_wait(w, seen, ns)
    return bk_load_acq32(w)


from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE


cdef class FeedArea:
    """The words of a feed area (a buffer: the watchers' read-only mmap), loaded with
    acquire ordering through one buffer held for this object's life. A function taking
    a typed memoryview takes its buffer anew at each call (150-250 ns a call on the
    shared 2-vCPU host), and a watcher's poll loads five words, which with one event a
    batch was more than the event cost it. The mapping stays open while this holds it."""
    cdef Py_buffer view
    cdef bint held

    def __cinit__(self, obj):
        PyObject_GetBuffer(obj, &self.view, PyBUF_SIMPLE)
        self.held = True

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    cdef inline const uint64_t *_word(self, size_t off) except NULL:
        if off % 8 or off + 8 > <size_t>self.view.len:
            raise _err.InvalidArgument(f"word offset {off} outside the area")
        return <const uint64_t *>(<const char *>self.view.buf + off)

    def load(self, size_t off):
        """The u64 at `off`, loaded with acquire ordering."""
        return bk_load_acq64(self._word(off))
