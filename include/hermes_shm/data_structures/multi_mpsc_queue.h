// multi_mpsc_queue<T>: lanes x priorities of bounded lock-free rings in shared
// memory, many producers and one consumer per lane.
//
// Each lane is a ring of slots with per-slot sequence numbers (Vyukov's
// bounded queue). A producer claims a ticket with a CAS on the lane's tail,
// writes the value and publishes it by moving the slot's sequence with a
// release CAS; the consumer reads the sequence with acquire order. TryPush
// fails at once when the lane is full; nothing ever spins on a full lane.
//
// A producer that dies (or stalls) between claiming a ticket and publishing it
// would block the consumer forever. After kStallTimeoutNs the consumer marks
// such a slot abandoned and moves on; the slot becomes a permanent hole that
// producers and the consumer step over (the lane loses one slot of capacity,
// counted in holes(); a lane made only of holes refuses pushes). If the
// stalled producer was alive after all, its
// publish CAS fails and it pushes its value again, so nothing is lost or
// duplicated and each producer's items still arrive in the order it pushed.
//
// The whole queue is one contiguous block with self-relative offsets, valid in
// every process that maps it. T must be trivially copyable (e.g.
// hipc::Pointer).
//
// Who may call what: TryPush from any thread of any process; TryPop only from
// the lane's single consumer at a time (handing a lane to another consumer
// must be ordered by a release/acquire pair); Size/Empty/header from anyone.
#ifndef HERMES_SHM_DATA_STRUCTURES_MULTI_MPSC_QUEUE_H_
#define HERMES_SHM_DATA_STRUCTURES_MULTI_MPSC_QUEUE_H_

#include <atomic>
#include <new>
#include <type_traits>

#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/util/futex.h"

namespace hipc {

/** Per-lane state the runtime may use (worker assignment, wake-up word, ...).
 */
struct LaneHeader {
  std::atomic<u32> worker_id_{0};  ///< Worker currently draining the lane.
  std::atomic<u32> flags_{0};      ///< Free for the owner's use.
  std::atomic<u64> user_[6];       ///< Free for the owner's use.
  LaneHeader() {
    for (auto &u : user_) u.store(0, std::memory_order_relaxed);
  }
};

/** One bounded MPSC ring. Lives inside a multi_mpsc_queue block. */
template <typename T, typename HeaderT = LaneHeader>
class mpsc_lane {
  static_assert(std::is_trivially_copyable<T>::value,
                "queue values must be trivially copyable");

 public:
  /** A consumer gives up on an unpublished slot after this long. */
  static constexpr u64 kStallTimeoutNs = 200ull * 1000 * 1000;
  /** An idle consumer looks for stalled producers once per this many empty
   * polls (a power of two). */
  static constexpr u64 kStallCheckEvery = 1024;

  /** Prepares an empty lane of `depth` (a power of two) slots found at
   * `slots_off` bytes from this lane. Not thread-safe; before publication. */
  void Init(u64 depth, hshm::i64 slots_off) {
    new (&header_) HeaderT();
    tail_.store(0, std::memory_order_relaxed);
    head_.store(0, std::memory_order_relaxed);
    holes_.store(0, std::memory_order_relaxed);
    stall_since_ns_ = 0;
    empty_polls_ = 0;
    mask_ = depth - 1;
    slots_off_ = slots_off;
    for (u64 i = 0; i < depth; ++i) {
      new (&slots()[i]) Slot();
      slots()[i].seq_.store(i, std::memory_order_relaxed);
    }
  }

  /** Appends `v`; false when the lane is full. Any thread, any process. */
  bool TryPush(const T &v) {
    for (;;) {
      u64 pos = tail_.load(std::memory_order_relaxed);
      Slot *s;
      u64 skipped = 0;
      for (;;) {
        s = &slots()[pos & mask_];
        u64 seq = s->seq_.load(std::memory_order_acquire);
        if (seq & kAbandoned) {
          // A hole: take the ticket and leave the slot empty. A lane that is
          // all holes accepts nothing (bounded, never a spin).
          if (++skipped > mask_) return false;
          tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed);
          pos = tail_.load(std::memory_order_relaxed);
          continue;
        }
        auto dif = static_cast<hshm::i64>(seq - pos);
        if (dif == 0) {
          if (tail_.compare_exchange_weak(pos, pos + 1,
                                          std::memory_order_relaxed)) {
            break;
          }
        } else if (dif < 0) {
          return false;  // full: the consumer has not freed this slot yet
        } else {
          pos = tail_.load(std::memory_order_relaxed);
        }
      }
      s->value_ = v;
      u64 expect = pos;
      if (s->seq_.compare_exchange_strong(expect, pos + 1,
                                          std::memory_order_release,
                                          std::memory_order_relaxed)) {
        return true;
      }
      // The consumer abandoned our slot while we stalled; push again.
    }
  }

  /** Removes the oldest value into `*out`; false when none is ready.
   * Only the lane's consumer may call. */
  bool TryPop(T *out) {
    u64 pos = head_.load(std::memory_order_relaxed);
    for (u64 skipped = 0;;) {
      Slot *s = &slots()[pos & mask_];
      u64 seq = s->seq_.load(std::memory_order_acquire);
      if (seq == pos + 1) {
        *out = s->value_;
        s->seq_.store(pos + mask_ + 1, std::memory_order_release);
        head_.store(pos + 1, std::memory_order_relaxed);
        stall_since_ns_ = 0;
        return true;
      }
      if (seq & kAbandoned) {
        if (++skipped > mask_) return false;  // a lane of holes: nothing
        head_.store(++pos, std::memory_order_relaxed);
        continue;
      }
      if (seq != pos) return false;  // not this round's slot: empty
      // The slot is free: the lane is empty, or a producer claimed it and
      // has not published yet. Telling them apart reads the producers' tail
      // line, so the idle path does it only every kStallCheckEvery polls
      // (a stall is only acted on after kStallTimeoutNs anyway).
      if (stall_since_ns_ == 0 && (++empty_polls_ & (kStallCheckEvery - 1))) {
        return false;
      }
      if (tail_.load(std::memory_order_acquire) <= pos) {
        stall_since_ns_ = 0;
        return false;  // empty
      }
      // Claimed but not yet published: wait, or give up after a long stall.
      u64 now = hshm::NowNs();
      if (stall_since_ns_ == 0) {
        stall_since_ns_ = now;
        return false;
      }
      if (now - stall_since_ns_ < kStallTimeoutNs) return false;
      u64 expect = pos;
      if (s->seq_.compare_exchange_strong(expect, pos | kAbandoned,
                                          std::memory_order_acq_rel)) {
        holes_.fetch_add(1, std::memory_order_relaxed);
        head_.store(++pos, std::memory_order_relaxed);
        stall_since_ns_ = 0;
      }
    }
  }

  /** Approximate number of queued values (any thread). */
  u64 Size() const {
    u64 t = tail_.load(std::memory_order_relaxed);
    u64 h = head_.load(std::memory_order_relaxed);
    return t > h ? t - h : 0;
  }
  /** True if no value is queued (approximate; any thread). */
  bool Empty() const { return Size() == 0; }
  /** Slots in the ring. */
  u64 depth() const { return mask_ + 1; }
  /** Slots abandoned after a producer stalled or died. */
  u64 holes() const { return holes_.load(std::memory_order_relaxed); }
  /** The lane's header. */
  HeaderT &header() { return header_; }

  /** Bytes one slot takes. */
  static constexpr size_t SlotSize() { return sizeof(Slot); }

 private:
  static constexpr u64 kAbandoned = 1ull << 63;
  struct Slot {
    std::atomic<u64> seq_;
    T value_;
  };
  Slot *slots() {
    return reinterpret_cast<Slot *>(reinterpret_cast<char *>(this) +
                                    slots_off_);
  }

  // Cache lines: header | producers' tail | consumer's head | read-only shape
  // (so neither side's writes evict the fields both read on every call).
  // Padding rather than alignas: the allocator aligns blocks to 16 bytes
  // only, and a type demanding 64 would be misaligned.
  static constexpr size_t kLine = HSHM_CACHELINE_SIZE;
  static constexpr size_t PadTo(size_t n) {
    return (kLine - n % kLine) % kLine;
  }
  HeaderT header_;
  char pad0_[PadTo(sizeof(HeaderT)) ? PadTo(sizeof(HeaderT)) : kLine];
  std::atomic<u64> tail_;
  char pad1_[kLine - sizeof(u64)];
  std::atomic<u64> head_;
  u64 stall_since_ns_;  ///< Consumer-only: when the head slot first stalled.
  u64 empty_polls_;     ///< Consumer-only: empty polls (paces stall checks).
  std::atomic<u64> holes_;
  char pad2_[kLine - 4 * sizeof(u64)];
  u64 mask_;
  hshm::i64 slots_off_;
};

/** num_lanes x num_prios lanes of one depth, in one shared block. */
template <typename T, typename HeaderT = LaneHeader>
class multi_mpsc_queue {
 public:
  using Lane = mpsc_lane<T, HeaderT>;

  /** Bytes needed for a queue of this shape (depth rounded up to 2^k). */
  static size_t ComputeSize(u32 num_lanes, u32 num_prios, u64 depth) {
    u64 d = RoundDepth(depth);
    size_t n = static_cast<size_t>(num_lanes) * num_prios;
    return LanesOffset() + n * sizeof(Lane) + n * d * Lane::SlotSize();
  }

  /** Allocates and initialises a queue with `alloc`; null FullPtr (and
   * *status set) when out of memory or the shape is invalid. */
  template <typename AllocT>
  static FullPtr<multi_mpsc_queue> New(AllocT *alloc, const MemContext &ctx,
                                       u32 num_lanes, u32 num_prios, u64 depth,
                                       Status *status = nullptr) {
    if (num_lanes == 0 || num_prios == 0 || depth == 0 ||
        depth > (1ull << 32)) {
      if (status) *status = Status::InvalidArgument("bad queue shape");
      return FullPtr<multi_mpsc_queue>();
    }
    FullPtr<char> mem =
        alloc->Allocate(ctx, ComputeSize(num_lanes, num_prios, depth));
    if (mem.IsNull()) {
      if (status) *status = Status::OutOfMemory("no memory for queue");
      return FullPtr<multi_mpsc_queue>();
    }
    auto *q = reinterpret_cast<multi_mpsc_queue *>(mem.ptr_);
    q->Init(num_lanes, num_prios, depth);
    if (status) *status = Status::Ok();
    return mem.template Cast<multi_mpsc_queue>();
  }

  /** Initialises a queue in `ComputeSize(...)` bytes at `this`. */
  void Init(u32 num_lanes, u32 num_prios, u64 depth) {
    num_lanes_ = num_lanes;
    num_prios_ = num_prios;
    depth_ = RoundDepth(depth);
    size_t n = static_cast<size_t>(num_lanes) * num_prios;
    char *lanes = reinterpret_cast<char *>(this) + LanesOffset();
    char *slots = lanes + n * sizeof(Lane);
    for (size_t i = 0; i < n; ++i) {
      char *lane = lanes + i * sizeof(Lane);
      char *my_slots = slots + i * depth_ * Lane::SlotSize();
      reinterpret_cast<Lane *>(lane)->Init(depth_, my_slots - lane);
    }
  }

  /** Lane `lane` of priority `prio`. REQUIRES: both in range. */
  HSHM_INLINE Lane &GetLane(u32 lane, u32 prio) {
    char *lanes = reinterpret_cast<char *>(this) + LanesOffset();
    return *reinterpret_cast<Lane *>(
        lanes + (static_cast<size_t>(prio) * num_lanes_ + lane) * sizeof(Lane));
  }
  u32 num_lanes() const { return num_lanes_; }
  u32 num_prios() const { return num_prios_; }
  u64 depth() const { return depth_; }

 private:
  static u64 RoundDepth(u64 d) {
    u64 r = 2;
    while (r < d) r <<= 1;
    return r;
  }
  static constexpr size_t LanesOffset() {
    return (sizeof(multi_mpsc_queue) + HSHM_CACHELINE_SIZE - 1) &
           ~static_cast<size_t>(HSHM_CACHELINE_SIZE - 1);
  }

  u32 num_lanes_;
  u32 num_prios_;
  u64 depth_;
};

}  // namespace hipc

#endif  // HERMES_SHM_DATA_STRUCTURES_MULTI_MPSC_QUEUE_H_
