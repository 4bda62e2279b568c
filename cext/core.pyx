# cython: language_level=3
cdef extern from "debug.h":
    int BUKT_DEBUG
DEBUG = bool(BUKT_DEBUG)
