// The compressor client is header-only (compressor_client.h); this file gives
// libcompressor_client.so a translation unit and checks that the header
// compiles on its own in a client build.
#include "compressor/compressor_client.h"
