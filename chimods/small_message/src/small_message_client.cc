// The small_message client is header-only (small_message_client.h); this file
// gives lib small_message_client.so a translation unit and checks that the
// header compiles on its own in a client build.
#include "small_message/small_message_client.h"
