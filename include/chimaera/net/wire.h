// The records runtimes exchange (inside lightbeam messages). Plain bytes in
// host byte order: [u32 WireRecordKind][fixed part][variable part].
//   request: WireRequest, then the task's IN fields (its Fields()
//            declaration); its input buffers are the record's data frames.
//   reply:   WireReply, err_len bytes of error text, then the OUT fields;
//            output buffers are the data frames.
//   load:    WireLoad (a node's load, for GetDynamic() scheduling).
#ifndef CHIMAERA_NET_WIRE_H_
#define CHIMAERA_NET_WIRE_H_

#include "chimaera/chimaera_types.h"

namespace chi {

/** Fixed part of a request record (after the u32 record kind). */
struct WireRequest {
  u64 req_id;
  PoolId pool_id;
  TaskNode task_node;
  DomainQuery dom_query;  ///< Concrete: kGlobalId(container) or kLocalId.
  MethodId method;
  u32 flags;
  u32 prio;
  u32 reply_wanted;  ///< Bit 0: reply wanted; bit 1: relayed once already.
  double period_ns;
};

/** Fixed part of a reply record (after the u32 record kind). */
struct WireReply {
  u64 req_id;
  u32 rc;
  u32 err_len;  ///< Bytes of error text that follow, then the OUT fields.
};

/** A node's load report (after the u32 record kind), sent to every peer
 * every balance.load_report_ms. */
struct WireLoad {
  u32 inflight;       ///< Tasks in flight on the sender's containers.
  u32 busy_permille;  ///< Mean busy fraction of its workers (0..1000).
  u64 seq;            ///< Report number (a newer one replaces an older).
};

/** Record kinds (the first u32 of every record). */
enum WireRecordKind : u32 { kWireRequest = 1, kWireReply = 2, kWireLoad = 3 };

}  // namespace chi

#endif  // CHIMAERA_NET_WIRE_H_
