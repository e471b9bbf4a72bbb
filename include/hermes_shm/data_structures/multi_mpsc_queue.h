// multi_mpsc_queue<T>: lanes x priorities of bounded lock-free rings in shared
// memory, many producers and one consumer per lane.
//
// Each lane is a ring of 16-byte slots (a sequence word and an 8-byte value)
// with per-slot sequence numbers, after Vyukov's bounded queue. A slot of
// ticket `pos` moves through these seq values:
//   pos              free for the producer holding ticket pos;
//   pos + 1          published; the consumer may take it;
//   pos + depth      taken (or recycled); free for the next round.
// A producer claims a ticket with a CAS on the lane's tail, then publishes
// with one 16-byte CAS that writes the value and moves seq from pos to pos + 1
// together (hshm::CompareExchange128). TryPush fails at once when the lane is
// full; nothing ever spins on a full lane.
//
// Crash safety. A producer that dies (or stalls) between claiming a ticket and
// publishing it would block the consumer: its slot stays at seq == pos while
// the tail has moved past. After kStallTimeoutNs the consumer recycles the
// ticket (seq -> pos + depth), and any unpublished ticket right after it at
// once (a run of them costs one timeout). A late producer's publish then fails,
// since seq is no longer pos, and it pushes again with a new ticket. As the
// value and seq change in one atomic step, there is no half-written slot to
// guard: no lane ever shrinks or wedges, whatever point a producer is killed
// at. Nothing is lost or duplicated and each producer's items arrive in the
// order it pushed them. A slot whose seq holds garbage (a scribbling process)
// is recycled the same way once it stalls the head. A tail that a process moved
// behind the consumer's head, or more than a ring ahead of it, is put back at
// the head by the consumer; a slot ahead of an unmoved tail (only a scribble
// makes one) is skipped by the producer that meets it. A scribble may lose or
// replay the items in the slots it touched, but never wedges the lane.
//
// Trust. The whole queue is one contiguous block with self-relative offsets,
// valid in every process that maps it; every field of it is writable by every
// attached process. A runtime must not trust the shape stored there (mask,
// slot offset, lane count) nor a consumer position: it drains and pushes
// through lane_view objects whose shape and consumer state live in its own
// memory (multi_mpsc_queue::View with the shape it created the queue with).
// The shared-shape helpers (mpsc_lane::TryPush/TryPop, GetLane) are for
// clients, tests and tools that trust the segment.
//
// T must be trivially copyable and 8 bytes (e.g. hipc::OffsetPointer), so
// that a slot is 16 bytes: four to a cache line, published in one atomic
// step.
//
// Who may call what: TryPush from any thread of any process; TryPop only from
// the lane's single consumer at a time (handing a lane to another consumer
// must be ordered by a release/acquire pair); Size/Empty/header from anyone.
#ifndef HERMES_SHM_DATA_STRUCTURES_MULTI_MPSC_QUEUE_H_
#define HERMES_SHM_DATA_STRUCTURES_MULTI_MPSC_QUEUE_H_

#include <atomic>
#include <cstring>
#include <new>
#include <type_traits>

#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/util/cas128.h"
#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/tsan.h"

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

namespace internal {
/** True if lane header type H declares `static void OnTicketClaimed(u64)`:
 * a test hook that Push calls between claiming its ticket and publishing
 * it (to stall there, as a stopped producer would). LaneHeader has none,
 * so production pushes compile without it. */
template <typename H, typename = void>
struct HasTicketHook : std::false_type {};
template <typename H>
struct HasTicketHook<H, std::void_t<decltype(H::OnTicketClaimed(u64{0}))>>
    : std::true_type {};
}  // namespace internal

/** Consumer-side state of one lane: where the next pop reads and how long
 * its slot has stalled. Lives in the consumer's private memory (lane_view)
 * or, for the trusting helpers, inside the lane. */
struct LaneConsumerState {
  u64 head_ = 0;            ///< Next ticket to pop.
  u64 stall_since_ns_ = 0;  ///< When the head slot first stalled (0: not).
  u64 empty_polls_ = 0;     ///< Empty polls (paces stall checks).
};

template <typename T, typename HeaderT>
class lane_view;

/** One bounded MPSC ring. Lives inside a multi_mpsc_queue block. */
template <typename T, typename HeaderT = LaneHeader>
class mpsc_lane {
  static_assert(std::is_trivially_copyable<T>::value,
                "queue values must be trivially copyable");
  static_assert(sizeof(T) == sizeof(u64),
                "queue values are 8 bytes (published with seq in one 16-byte "
                "CAS)");

 public:
  /** A consumer acts on an unpublished head slot after this long. */
  static constexpr u64 kStallTimeoutNs = 200ull * 1000 * 1000;
  /** An idle consumer looks for stalled producers once per this many empty
   * polls (a power of two). */
  static constexpr u64 kStallCheckEvery = 1024;
  /** Slot reads one push makes at most before it gives up (reports full): a
   * bound against a process that keeps moving the tail or scribbling
   * slots. Legitimate contention retries once per ticket another producer
   * takes, far fewer. */
  static constexpr u32 kMaxPushSteps = 1u << 16;
  /** Times a push claims a fresh ticket after losing its claimed one to a
   * recycle (it stalled past kStallTimeoutNs) or a scribble. */
  static constexpr u32 kMaxPushClaims = 8;

  /** One ring slot: its sequence word and value, published together. */
  struct alignas(16) Slot {
    std::atomic<u64> seq_;
    std::atomic<u64> value_;  ///< The bytes of a T.
  };
  static_assert(sizeof(Slot) == 16, "a slot is one 16-byte CAS");

  /** Prepares an empty lane of `depth` (a power of two) slots found at
   * `slots_off` bytes from this lane (16-byte aligned). Not thread-safe;
   * before publication. */
  void Init(u64 depth, hshm::i64 slots_off) {
    new (&header_) HeaderT();
    tail_.store(0, std::memory_order_relaxed);
    head_.store(0, std::memory_order_relaxed);
    recycled_.store(0, std::memory_order_relaxed);
    cons_ = LaneConsumerState();
    mask_ = depth - 1;
    slots_off_ = slots_off;
    for (u64 i = 0; i < depth; ++i) {
      new (&slots()[i]) Slot();
      slots()[i].seq_.store(i, std::memory_order_relaxed);
      slots()[i].value_.store(0, std::memory_order_relaxed);
    }
  }

  /** Appends `v` using the shape stored in the lane (trusts the segment);
   * false when the lane is full. Any thread, any process. */
  bool TryPush(const T &v) { return Push(this, slots(), mask_, v); }
  /** Removes the oldest value using the shape and consumer state stored in
   * the lane (trusts the segment). Only the lane's consumer may call. */
  bool TryPop(T *out) { return Pop(this, slots(), mask_, &cons_, out); }

  /** Approximate number of queued values (any thread). */
  u64 Size() const {
    u64 t = tail_.load(std::memory_order_relaxed);
    u64 h = head_.load(std::memory_order_relaxed);
    return t > h ? t - h : 0;
  }
  /** True if no value is queued (approximate; any thread). */
  bool Empty() const { return Size() == 0; }
  /** Tickets handed out so far (any thread). */
  u64 tail() const { return tail_.load(std::memory_order_acquire); }
  /** Tickets the consumer has passed, as it last published (any thread). */
  u64 head() const { return head_.load(std::memory_order_acquire); }
  /** Slots in the ring, as stored in the lane. */
  u64 depth() const { return mask_ + 1; }
  /** Tickets the consumer recycled after a producer stalled or died (or a
   * slot held garbage). */
  u64 recycled() const { return recycled_.load(std::memory_order_relaxed); }
  /** The lane's header. */
  HeaderT &header() { return header_; }

  /** Bytes one slot takes. */
  static constexpr size_t SlotSize() { return sizeof(Slot); }

  /** Push algorithm over an explicit shape. Any thread, any process. */
  static bool Push(mpsc_lane *l, Slot *slots, u64 mask, const T &v);
  /** Pop algorithm over an explicit shape and consumer state. The lane's
   * consumer only. Inline: the published case is a few instructions; the
   * rest is PopUnpublished. */
  HSHM_INLINE static bool Pop(mpsc_lane *l, Slot *slots, u64 mask,
                              LaneConsumerState *cs, T *out);

 private:
  Slot *slots() {
    return reinterpret_cast<Slot *>(reinterpret_cast<char *>(this) +
                                    slots_off_);
  }
  /** Pop's path when the head slot (`s`, holding `seq`) is not published
   * and it is time to look at the tail: the lane is empty, or a ticket
   * stalls (see Pop). Returns false. */
  static __attribute__((noinline)) bool PopUnpublished(mpsc_lane *l, Slot *s,
                                                       u64 seq, u64 mask,
                                                       LaneConsumerState *cs);
  /** Recycles ticket `pos` whose slot `s` holds `seq`: frees the slot for
   * the next round and advances the head (unless a producer published it
   * meanwhile; the next pop then takes it). Leaves the stall clock running,
   * so an unpublished ticket right after it is recycled at once. */
  static void Recycle(mpsc_lane *l, Slot *s, u64 seq, u64 pos, u64 mask,
                      LaneConsumerState *cs);
  /** The bits of `v` as a word, and back. */
  static u64 ToWord(const T &v) {
    u64 w;
    std::memcpy(&w, &v, sizeof(w));
    return w;
  }
  static T FromWord(u64 w) {
    T v;
    std::memcpy(static_cast<void *>(&v), &w, sizeof(v));
    return v;
  }
  /** Tests scribble the shared fields as a hostile process would. */
  friend struct MpscLaneTestPeer;

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
  std::atomic<u64> head_;  ///< Published copy of the consumer's head.
  std::atomic<u64> recycled_;
  LaneConsumerState cons_;  ///< For TryPop only (trusting consumers).
  char pad2_[kLine - 5 * sizeof(u64)];
  u64 mask_;
  hshm::i64 slots_off_;
};

template <typename T, typename HeaderT>
bool mpsc_lane<T, HeaderT>::Push(mpsc_lane *l, Slot *slots, u64 mask,
                                 const T &v) {
  const u64 word = ToWord(v);
  // Each pass claims one ticket; a pass fails only if the consumer recycled
  // our ticket (we stalled past kStallTimeoutNs) or another process
  // scribbles the slot. Bounded (kMaxPushClaims passes, kMaxPushSteps slot
  // reads in all), so a hostile process cannot trap us here.
  u32 steps = 0;
  for (u32 claims = 0; claims < kMaxPushClaims; ++claims) {
    u64 pos = l->tail_.load(std::memory_order_relaxed);
    Slot *s;
    for (;;) {
      if (++steps > kMaxPushSteps) return false;
      s = &slots[pos & mask];
      // Its line is usually the consumer's (it freed the slot last round):
      // fetch it once, ready for the CAS below, rather than read it and then
      // ask for it again to write.
      hshm::PrefetchForWrite(s);
      u64 seq = s->seq_.load(std::memory_order_acquire);
      auto dif = static_cast<hshm::i64>(seq - pos);
      if (dif == 0) {
        if (l->tail_.compare_exchange_weak(pos, pos + 1,
                                           std::memory_order_relaxed)) {
          break;
        }
      } else if (dif < 0) {
        return false;  // full: the consumer has not freed this slot yet
      } else {
        // Another producer took `pos` (the tail moved on), or the slot is
        // ahead of an unmoved tail. A slot passes seq == pos only after
        // ticket pos was claimed, and in a run nobody scribbles the tail
        // only grows (the consumer moves it back only from where no push
        // puts it), so only a scribble makes that: skip the ticket. The
        // consumer recycles it when it gets there. (Should a reset let two
        // producers hold one ticket, the 16-byte CAS lets one publish.)
        u64 t = l->tail_.load(std::memory_order_relaxed);
        if (t == pos) {
          l->tail_.compare_exchange_strong(t, pos + 1,
                                           std::memory_order_relaxed);
          t = l->tail_.load(std::memory_order_relaxed);
        }
        pos = t;
      }
    }
    if constexpr (internal::HasTicketHook<HeaderT>::value) {
      HeaderT::OnTicketClaimed(pos);
    }
    // Publish value and seq together. The CAS fails if the consumer
    // recycled the ticket meanwhile (seq moved on): push again. It is a full
    // barrier, so a producer may follow a push with a seq_cst load of the
    // consumer's sleep flag, without a fence, and still pair with the
    // consumer's store; fence; re-check (IpcManager::WakeLaneWorker).
    hshm::Words128 expect{pos, s->value_.load(std::memory_order_relaxed)};
    HSHM_TSAN_RELEASE(s);  // the consumer acquires on the slot
    for (int i = 0; i < 4; ++i) {
      if (hshm::CompareExchange128(s, &expect, hshm::Words128{pos + 1, word})) {
        return true;
      }
      if (expect.lo != pos) break;  // recycled: our ticket is gone
      // Only the value moved (a scribbling process): try again.
    }
  }
  return false;
}

template <typename T, typename HeaderT>
void mpsc_lane<T, HeaderT>::Recycle(mpsc_lane *l, Slot *s, u64 seq, u64 pos,
                                    u64 mask, LaneConsumerState *cs) {
  u64 expect = seq;
  if (s->seq_.compare_exchange_strong(expect, pos + mask + 1,
                                      std::memory_order_acq_rel)) {
    l->recycled_.fetch_add(1, std::memory_order_relaxed);
    cs->head_ = pos + 1;
    l->head_.store(pos + 1, std::memory_order_relaxed);
  }
  // The stall clock keeps running: an unpublished ticket right after this
  // one is recycled at once, so a run of them (a tail a client moved up to
  // a ring ahead) costs one timeout, not one per ticket. A live producer
  // whose ticket goes this way pushes again. Pop and the empty check stop
  // the clock.
}

template <typename T, typename HeaderT>
HSHM_INLINE bool mpsc_lane<T, HeaderT>::Pop(mpsc_lane *l, Slot *slots, u64 mask,
                                            LaneConsumerState *cs, T *out) {
  u64 pos = cs->head_;
  Slot *s = &slots[pos & mask];
  u64 seq = s->seq_.load(std::memory_order_acquire);
  if (__builtin_expect(seq != pos + 1, 0)) {
    // Not published: the lane is empty, or a producer claimed the ticket
    // and has not published yet (seq == pos), or the slot holds garbage.
    // Telling these apart reads the producers' tail line, so the idle path
    // does it only every kStallCheckEvery polls (a stall is only acted on
    // after kStallTimeoutNs anyway).
    if (cs->stall_since_ns_ == 0 &&
        (++cs->empty_polls_ & (kStallCheckEvery - 1))) {
      return false;
    }
    return PopUnpublished(l, s, seq, mask, cs);
  }
  HSHM_TSAN_ACQUIRE(s);
  *out = FromWord(s->value_.load(std::memory_order_relaxed));
  s->seq_.store(pos + mask + 1, std::memory_order_release);
  cs->head_ = pos + 1;
  l->head_.store(pos + 1, std::memory_order_relaxed);
  cs->stall_since_ns_ = 0;
  return true;
}

template <typename T, typename HeaderT>
bool mpsc_lane<T, HeaderT>::PopUnpublished(mpsc_lane *l, Slot *s, u64 seq,
                                           u64 mask, LaneConsumerState *cs) {
  const u64 pos = cs->head_;
  u64 t = l->tail_.load(std::memory_order_acquire);
  if (t <= pos || t - pos > mask + 1) {
    // Empty, or a tail no push can make: producers never take a ticket a
    // ring ahead of the head, and the head never passes the tail. Put a
    // scribbled tail back at the head, so that pushes start there again.
    if (t != pos) {
      l->tail_.compare_exchange_strong(t, pos, std::memory_order_relaxed);
    }
    cs->stall_since_ns_ = 0;
    return false;
  }
  // Claimed but not yet published: wait, then recycle the ticket. Its
  // producer, if alive, then fails to publish and pushes again.
  u64 now = hshm::NowNs();
  if (cs->stall_since_ns_ == 0) {
    cs->stall_since_ns_ = now;
    return false;
  }
  if (now - cs->stall_since_ns_ < kStallTimeoutNs) return false;
  Recycle(l, s, seq, pos, mask, cs);
  return false;  // the next call pops what follows
}

/** A lane seen through a shape the caller trusts (its own copy, not the
 * fields stored in shared memory), with the consumer state in the caller's
 * memory. Process-private; the runtime pushes and pops only through these.
 * Who may call what: as for mpsc_lane. */
template <typename T, typename HeaderT = LaneHeader>
class lane_view {
 public:
  using Lane = mpsc_lane<T, HeaderT>;
  using Slot = typename Lane::Slot;

  lane_view() = default;
  /** Binds to `lane`, whose `mask + 1` slots start at `slots`. */
  lane_view(Lane *lane, Slot *slots, u64 mask)
      : lane_(lane), slots_(slots), mask_(mask) {}
  /** Copies a view (before it is shared between threads). */
  lane_view(const lane_view &o)
      : lane_(o.lane_),
        slots_(o.slots_),
        mask_(o.mask_),
        cons_(o.cons_),
        released_(o.released_.load(std::memory_order_relaxed)) {}
  /** Assigns a view (before it is shared between threads). */
  lane_view &operator=(const lane_view &o) {
    lane_ = o.lane_;
    slots_ = o.slots_;
    mask_ = o.mask_;
    cons_ = o.cons_;
    released_.store(o.released_.load(std::memory_order_relaxed),
                    std::memory_order_relaxed);
    return *this;
  }

  /** Appends `v`; false when the lane is full. Any thread. */
  HSHM_INLINE bool TryPush(const T &v) {
    return Lane::Push(lane_, slots_, mask_, v);
  }
  /** Removes the oldest value; false when none is ready. Consumer only. */
  HSHM_INLINE bool TryPop(T *out) {
    bool ok = Lane::Pop(lane_, slots_, mask_, &cons_, out);
    ReleaseHeld();  // what it popped, or a ticket it recycled
    return ok;
  }
  /** Like TryPop, but the value stays held: released() does not pass it
   * until ReleaseHeld (the lane's shared head, and so Size(), do at once).
   * For a consumer that pops a batch ahead of handling it, so that whoever
   * waits for released() to pass a ticket also waits for that handling.
   * Consumer only. */
  HSHM_INLINE bool TryPopHeld(T *out) {
    return Lane::Pop(lane_, slots_, mask_, &cons_, out);
  }
  /** Releases every value TryPopHeld returned, and any ticket a pop
   * recycled. Consumer only. */
  void ReleaseHeld() {
    if (released_.load(std::memory_order_relaxed) != cons_.head_) {
      released_.store(cons_.head_, std::memory_order_release);
    }
  }
  /** Tickets the consumer is done with: popped and not held (see
   * TryPopHeld). Kept in this process's memory, so unlike the lane's shared
   * head no other process can move it. Any thread of this process. */
  u64 released() const { return released_.load(std::memory_order_acquire); }
  /** Approximate number of queued values, from the shared fields (any
   * thread). */
  u64 Size() const { return lane_->Size(); }
  /** True if no value is queued (approximate; any thread). */
  bool Empty() const { return lane_->Empty(); }
  /** Tickets between released() and the shared tail, at most a ring: what
   * is queued, plus what the consumer holds. A process that scribbles the
   * lane's shared head cannot make a lane look empty. Any thread of this
   * process (it reads no consumer-private state). */
  u64 QueuedPastReleased() const {
    u64 t = lane_->tail();
    u64 r = released();
    u64 n = t > r ? t - r : 0;
    return n < mask_ + 1 ? n : mask_ + 1;
  }
  /** Slots in the ring (trusted shape). */
  u64 depth() const { return mask_ + 1; }
  /** See mpsc_lane::recycled. */
  u64 recycled() const { return lane_->recycled(); }
  /** The lane's header (in shared memory: validate what you read). */
  HeaderT &header() { return lane_->header(); }
  /** The lane in shared memory. */
  Lane *lane() const { return lane_; }
  /** Slot `i` (mod depth); for tests that simulate stalled producers. */
  Slot *slot(u64 i) const { return &slots_[i & mask_]; }

 private:
  Lane *lane_ = nullptr;
  Slot *slots_ = nullptr;
  u64 mask_ = 0;
  LaneConsumerState cons_;
  std::atomic<u64> released_{0};  ///< See released().
};

/** num_lanes x num_prios lanes of one depth, in one shared block. */
template <typename T, typename HeaderT = LaneHeader>
class multi_mpsc_queue {
 public:
  using Lane = mpsc_lane<T, HeaderT>;
  using View = lane_view<T, HeaderT>;
  // Slots follow the lanes: in a block aligned to 16 bytes (what every
  // allocator gives), each slot must be too, or its 16-byte CAS faults.
  static_assert(sizeof(Lane) % alignof(typename Lane::Slot) == 0,
                "lanes keep the slots behind them 16-byte aligned");

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

  /** Initialises a queue in `ComputeSize(...)` bytes at `this`. REQUIRES:
   * `this` is 16-byte aligned (slots are published with a 16-byte CAS). */
  void Init(u32 num_lanes, u32 num_prios, u64 depth) {
    num_lanes_ = num_lanes;
    num_prios_ = num_prios;
    depth_ = RoundDepth(depth);
    size_t n = static_cast<size_t>(num_lanes) * num_prios;
    for (size_t i = 0; i < n; ++i) {
      char *lane = LaneAddr(this, num_lanes, i % num_lanes, i / num_lanes);
      char *slots = SlotsAddr(this, num_lanes, num_prios, depth_, i % num_lanes,
                              i / num_lanes);
      reinterpret_cast<Lane *>(lane)->Init(depth_, slots - lane);
    }
  }

  /** Lane `lane` of priority `prio`, located with the shape stored in the
   * segment (trusts it). REQUIRES: both in range. */
  HSHM_INLINE Lane &GetLane(u32 lane, u32 prio) {
    return *reinterpret_cast<Lane *>(LaneAddr(this, num_lanes_, lane, prio));
  }
  /** A view of lane (`lane`, `prio`) of the queue at `q`, computed only from
   * the shape the caller created it with (`num_lanes` x `num_prios`,
   * `depth` as passed to New): nothing is read from the segment. REQUIRES:
   * lane < num_lanes, prio < num_prios. */
  static View MakeView(multi_mpsc_queue *q, u32 num_lanes, u32 num_prios,
                       u64 depth, u32 lane, u32 prio) {
    u64 d = RoundDepth(depth);
    return View(reinterpret_cast<Lane *>(LaneAddr(q, num_lanes, lane, prio)),
                reinterpret_cast<typename Lane::Slot *>(
                    SlotsAddr(q, num_lanes, num_prios, d, lane, prio)),
                d - 1);
  }
  /** A view located with the shape stored in the segment (trusts it). */
  View GetView(u32 lane, u32 prio) {
    return MakeView(this, num_lanes_, num_prios_, depth_, lane, prio);
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
  /** Address of lane (lane, prio) for a queue of `num_lanes` lanes. */
  static char *LaneAddr(multi_mpsc_queue *q, u32 num_lanes, u32 lane,
                        u32 prio) {
    return reinterpret_cast<char *>(q) + LanesOffset() +
           (static_cast<size_t>(prio) * num_lanes + lane) * sizeof(Lane);
  }
  /** Address of the first slot of lane (lane, prio). */
  static char *SlotsAddr(multi_mpsc_queue *q, u32 num_lanes, u32 num_prios,
                         u64 depth, u32 lane, u32 prio) {
    size_t n = static_cast<size_t>(num_lanes) * num_prios;
    size_t i = static_cast<size_t>(prio) * num_lanes + lane;
    return reinterpret_cast<char *>(q) + LanesOffset() + n * sizeof(Lane) +
           i * depth * Lane::SlotSize();
  }

  u32 num_lanes_;
  u32 num_prios_;
  u64 depth_;
};

}  // namespace hipc

#endif  // HERMES_SHM_DATA_STRUCTURES_MULTI_MPSC_QUEUE_H_
