// Chimaera's headers, and the shipped modules' task and client headers,
// compile with CHIMAERA_NO_FIELD_MACROS: the spec's short field decorators
// (IN, OUT, INOUT, TEMP) stay undefined for includers whose other libraries
// use those names. Compiled into chimods_migrate_test, which links all
// three shipped clients.
#define CHIMAERA_NO_FIELD_MACROS
#include <gtest/gtest.h>

#include <cstring>

#include "chimaera/admin/admin_client.h"
#include "chimaera/chimaera.h"
#include "chimaera/module.h"
#include "chimaera/task_graph.h"
#include "compressor/compressor_client.h"
#include "kvs/kvs_client.h"
#include "small_message/small_message_client.h"

#if defined(IN) || defined(OUT) || defined(INOUT) || defined(TEMP)
#error "a Chimaera header defined a short field macro"
#endif

namespace {

// The modules' types are whole without the short names.
TEST(FieldMacrosTest, HeadersNeedNoShortFieldNames) {
  static_assert(sizeof(chi::kvs::PutTask) > sizeof(chi::Task));
  static_assert(sizeof(chi::small_message::EchoTask) > sizeof(chi::Task));
  EXPECT_STREQ(chi::small_message::SmallMessage::kName, "small_message");
  EXPECT_STREQ(chi::kvs::Kvs::kName, "kvs");
}

}  // namespace
