// The kvs client is header-only (kvs_client.h); this file gives
// libkvs_client.so a translation unit and checks that the header compiles on
// its own in a client build.
#include "kvs/kvs_client.h"
