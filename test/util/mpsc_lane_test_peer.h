// Test-only access to an mpsc_lane's shared fields, to write them as a
// hostile process would (the lane names this struct a friend).
#ifndef CHIMAERA_TEST_UTIL_MPSC_LANE_TEST_PEER_H_
#define CHIMAERA_TEST_UTIL_MPSC_LANE_TEST_PEER_H_

#include <atomic>

#include "hermes_shm/types.h"

namespace hipc {

/** Hands out references to a lane's private fields. Tests only. */
struct MpscLaneTestPeer {
  /** The producers' tail. */
  template <typename LaneT>
  static std::atomic<hshm::u64> &Tail(LaneT *l) {
    return l->tail_;
  }
  /** The consumer's published head. */
  template <typename LaneT>
  static std::atomic<hshm::u64> &Head(LaneT *l) {
    return l->head_;
  }
  /** The ring mask stored in the lane. */
  template <typename LaneT>
  static hshm::u64 &Mask(LaneT *l) {
    return l->mask_;
  }
  /** The slots' offset stored in the lane. */
  template <typename LaneT>
  static hshm::i64 &SlotsOff(LaneT *l) {
    return l->slots_off_;
  }
};

}  // namespace hipc

#endif  // CHIMAERA_TEST_UTIL_MPSC_LANE_TEST_PEER_H_
