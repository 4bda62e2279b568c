/* BUKT_DEBUG: `make debug` builds with -DBUKT_DEBUG=1, which turns on the invariant
 * checks written as `if BUKT_DEBUG:` in the core (the compiler drops them otherwise). */
#ifndef BUKT_DEBUG
#define BUKT_DEBUG 0
#endif
