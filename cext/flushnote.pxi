# flushnote.pxi: THE FLUSH NOTIFIER, how an event loop learns that the writer flushed
# when the writer cannot wake it itself.
#
# The flush waker (flushwake.pxi) is the way: the writer sends a datagram to the
# waiting process's socket. This thread is its fallback, for a process without a
# process row of its own (max_procs rows taken, a read-only store) or a second Store
# in one process; Store.flush_waker() picks, and both offer fd, arm, disarm, clear.
#
# Under `fsync: always` a front end (a TCP or HTTP worker) holds each write's response
# until the writer's flushed position passes the write's record. Local programs sleep on
# the header's flush_epoch futex (Store.wait_durable), but an event loop cannot sleep on
# a futex, and polling the position on a timer adds up to the timer's period to every
# acknowledgement (1 ms on the epoll loop). So each process that waits gets one thread,
# started on first use, that turns the futex into an eventfd the loop watches:
#
#     while the loop watches (`active`, set while it has waiters):
#         count itself in flush_waiters (store.pxi, THE FLUSH WAKE);
#         read flush_epoch, then flushed_pos;
#         if flushed_pos moved since the last signal: write 1 to the eventfd;
#         sleep on flush_epoch (50 ms at most: stop and active are re-read)
#     while it does not: sleep on `active` (100 ms at most)
#
# Reading the epoch before the position is what makes the sleep safe: a flush after
# the read changes the epoch, and the futex then returns at once. A signal may come
# with nothing to release (the first one after `active` is set); the loop just finds
# nobody to answer. The thread never takes the GIL and touches nothing but its own
# struct, the eventfd and two header words, so the loop keeps its GIL and its timers;
# the timers stay as the fallback and for the timeouts.
#
# Lifetime: the struct is malloc'd and the thread is the only reader of `stop`, so
# Store.close() (and dealloc) stop it and wait for `done` before unmapping the header
# it reads. A process forked after the thread started has the struct but no thread:
# Store.flush_notifier() notices the fork (the fork epoch) and starts a new one.

from cpython.pythread cimport PyThread_start_new_thread
from libc.errno cimport errno

cdef extern from "sys/eventfd.h" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "unistd.h" nogil:
    ssize_t c_write "write"(int fd, const void *buf, size_t n)
    ssize_t c_read "read"(int fd, void *buf, size_t n)
    int c_close "close"(int fd)
    int c_usleep "usleep"(unsigned int usec)

ctypedef struct bk_notify:
    bk_header *hdr
    uint32_t active                 # futex word, process-private: 1 while watched
    uint32_t stop
    uint32_t done                   # set by the thread as it ends
    int efd


cdef void _notify_main(void *arg) noexcept nogil:
    cdef bk_notify *n = <bk_notify *>arg
    cdef uint64_t one = 1, last = 0, flushed
    cdef uint32_t epoch
    while not bk_load_acq32(&n.stop):
        if not bk_load_acq32(&n.active):
            bk_futex_wait(&n.active, 0, 100000000)
            continue
        bk_inc32(&n.hdr.flush_waiters)      # counted before the epoch is read
        bk_fence_seq()                      # (store.pxi, THE FLUSH WAKE)
        epoch = bk_load_acq32(&n.hdr.flush_epoch)
        flushed = bk_load_acq64(&n.hdr.flushed_pos)
        if flushed != last:
            last = flushed
            c_write(n.efd, &one, 8)
        bk_futex_wait(&n.hdr.flush_epoch, epoch, 50000000)
        bk_dec32(&n.hdr.flush_waiters)
    bk_store_rel32(&n.done, 1)


cdef class FlushNotifier:
    """An eventfd (`fd`) that becomes readable after each flush of the writer while
    `watch(True)` is in force (THE FLUSH NOTIFIER above). One a process, from
    Store.flush_notifier(); an event loop watches `fd`, calls `clear()` when it is
    readable, and reads the flushed position itself."""
    cdef bk_notify *n
    cdef readonly int fd
    cdef int epoch

    def __cinit__(self):
        self.n = NULL
        self.fd = -1

    cdef int _start(self, bk_header *h) except -1:
        cdef bk_notify *n = <bk_notify *>calloc(1, sizeof(bk_notify))
        if n == NULL:
            raise MemoryError()
        n.hdr = h
        n.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if n.efd < 0:
            free(n)
            raise OSError(errno, "eventfd for the flush notifier")
        if PyThread_start_new_thread(_notify_main, <void *>n) == -1:
            c_close(n.efd)
            free(n)
            raise OSError("could not start the flush notifier's thread")
        self.n, self.fd, self.epoch = n, n.efd, _fork_epoch
        return 0

    def watch(self, bint on):
        """Signal after each flush (True) or not at all (False)."""
        if self.n == NULL:
            raise _err.BuktError("the flush notifier is stopped")
        bk_store_rel32(&self.n.active, 1 if on else 0)
        if on:
            bk_futex_wake(&self.n.active)

    def arm(self, uint64_t pos):
        """The flush waker's interface (flushwake.pxi), for a process that has no row
        of its own: signal after each flush; True when `pos` is flushed already."""
        self.watch(True)
        return bk_load_acq64(&self.n.hdr.flushed_pos) >= pos

    def disarm(self):
        self.watch(False)

    def clear(self):
        """Reset the eventfd after it was seen readable."""
        cdef uint64_t v
        if self.fd >= 0:
            c_read(self.fd, &v, 8)          # non-blocking: EAGAIN when already clear

    cdef bint _move(self, bk_header *h) noexcept:
        """A re-attach (store.pxi, RETIREMENT): watch header `h` from now on, keeping
        the eventfd an event loop watches. The thread is ended and started again on
        `h`; True when the old header may be unmapped (False: the thread did not end,
        so it keeps watching the old one and the caller keeps that mapping)."""
        cdef bk_notify *n = self.n
        cdef int i
        if n == NULL or self.epoch != _fork_epoch:
            return True                     # no thread of ours reads a header
        bk_store_rel32(&n.stop, 1)
        bk_futex_wake(&n.active)
        bk_futex_wake(&n.hdr.flush_epoch)
        for i in range(20000):
            if bk_load_acq32(&n.done):
                n.hdr = h
                n.stop = 0
                n.done = 0
                if PyThread_start_new_thread(_notify_main, <void *>n) == -1:
                    self.n, self.fd = NULL, -1  # no thread: the loop's timers remain
                    c_close(n.efd)
                    free(n)
                return True
            c_usleep(100)
        return False

    cdef bint _stop(self) noexcept:
        """Before the header is unmapped: end the thread (up to 2 s) and free what it
        used. True when the header may go; False if the thread did not end (it keeps its
        struct, and the caller keeps the mapping). A notifier inherited through fork
        has no thread here: only its copy of the eventfd is closed."""
        cdef bk_notify *n = self.n
        cdef int i
        if n == NULL:
            return True
        self.n, self.fd = NULL, -1
        if self.epoch != _fork_epoch:
            c_close(n.efd)
            return True
        bk_store_rel32(&n.stop, 1)
        bk_futex_wake(&n.active)
        bk_futex_wake(&n.hdr.flush_epoch)   # others' waiters re-check and sleep again
        for i in range(20000):
            if bk_load_acq32(&n.done):
                c_close(n.efd)
                free(n)
                return True
            c_usleep(100)
        return False

