#ifndef BUKT_DEBUG
#define BUKT_DEBUG 0
#endif
