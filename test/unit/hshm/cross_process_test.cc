// Producers in forked child processes allocate objects in one shared segment
// and push their offsets; the parent consumes, verifies and frees them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <vector>

#include "hermes_shm/data_structures/multi_mpsc_queue.h"
#include "test_util.h"

namespace {

using Queue = hipc::multi_mpsc_queue<hipc::OffsetPointer>;

struct Message {
  hshm::u32 producer;
  hshm::u64 seq;
  hshm::u64 checksum;
  char payload[40];
};

hshm::u64 Checksum(const Message &m) {
  return m.producer * 1000003ull + m.seq * 31 + 7;
}

/** Custom header of the test segment: where the queue lives. */
struct Root {
  hipc::Pointer queue;
};

/** Child body: `count` messages (0 = until killed) into lane `lane`. */
[[noreturn]] void Produce(hipc::ThreadLocalAllocator *alloc, Queue *q,
                          hshm::u32 producer, hshm::u32 lane, hshm::u64 count) {
  for (hshm::u64 i = 0; count == 0 || i < count; ++i) {
    hipc::FullPtr<Message> m;
    while ((m = alloc->NewObj<Message>(HSHM_MCTX)).IsNull()) usleep(100);
    m->producer = producer;
    m->seq = i;
    m->checksum = Checksum(*m);
    std::memset(m->payload, static_cast<int>(producer), sizeof(m->payload));
    while (!q->GetLane(lane, 0).TryPush(m.shm_.off_)) usleep(10);
  }
  alloc->FlushThreadCache();
  _exit(0);
}

/** Pops everything available from every lane into `got`, verifying and
 * freeing each message. Returns false on a corrupt message. */
bool Drain(hipc::ThreadLocalAllocator *alloc, Queue *q,
           std::map<hshm::u32, std::vector<hshm::u64>> *got) {
  hipc::OffsetPointer off;
  for (hshm::u32 l = 0; l < q->num_lanes(); ++l) {
    while (q->GetLane(l, 0).TryPop(&off)) {
      hipc::FullPtr<Message> m(hipc::Pointer(alloc->GetId(), off.off_));
      if (m.IsNull() || m->checksum != Checksum(*m)) return false;
      for (char c : m->payload) {
        if (c != static_cast<char>(m->producer)) return false;
      }
      (*got)[m->producer].push_back(m->seq);
      if (!alloc->DelObj(HSHM_MCTX, m).ok()) return false;
    }
  }
  return true;
}

/** Kills and reaps children on scope exit, so a failed test leaves none. */
struct Reaper {
  std::vector<pid_t> pids;
  ~Reaper() {
    for (pid_t p : pids) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }
};

TEST(CrossProcessTest, ChildrenProduceParentConsumes) {
  constexpr int kChildren = 3;
  constexpr hshm::u64 kCount = 20000;
  hshm_test::ShmHeap<hipc::ThreadLocalAllocator> heap(32 << 20, 6,
                                                      sizeof(Root));
  ASSERT_TRUE(heap.status().ok()) << heap.status();
  auto &alloc = heap.alloc();
  auto q = Queue::New(&alloc, HSHM_MCTX, 2, 1, 64);
  ASSERT_FALSE(q.IsNull());
  alloc.GetCustomHeader<Root>()->queue = q.shm_;
  alloc.FlushThreadCache();
  hshm::i64 base_in_use = alloc.GetBytesInUse();

  Reaper reaper;
  for (int c = 0; c < kChildren; ++c) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // The child finds the queue through the segment's root, as a client
      // process would.
      hipc::FullPtr<Queue> cq(alloc.GetCustomHeader<Root>()->queue);
      Produce(&alloc, cq.ptr_, c, c % 2, kCount);
    }
    reaper.pids.push_back(pid);
  }
  std::map<hshm::u32, std::vector<hshm::u64>> got;
  uint64_t deadline = hshm::NowNs() + 60ull * 1000000000;
  size_t total = 0;
  while (total < kChildren * kCount) {
    ASSERT_TRUE(Drain(&alloc, q.ptr_, &got));
    total = 0;
    for (auto &kv : got) total += kv.second.size();
    ASSERT_LT(hshm::NowNs(), deadline) << "timed out with " << total;
  }
  for (pid_t p : reaper.pids) {
    int st = 0;
    waitpid(p, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  reaper.pids.clear();
  for (int c = 0; c < kChildren; ++c) {
    auto &seqs = got[c];
    ASSERT_EQ(seqs.size(), kCount);
    for (hshm::u64 i = 0; i < kCount; ++i) ASSERT_EQ(seqs[i], i);
  }
  alloc.FlushThreadCache();
  // Everything the children allocated came back.
  EXPECT_EQ(alloc.GetBytesInUse(), base_in_use);
}

// A child killed with SIGKILL mid-allocate/push stops neither the other
// producers (sharing its lane) nor the allocator.
TEST(CrossProcessTest, KilledProducerDoesNotWedgeOthers) {
  constexpr hshm::u64 kCount = 20000;
  hshm_test::ShmHeap<hipc::ThreadLocalAllocator> heap(32 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &alloc = heap.alloc();
  auto q = Queue::New(&alloc, HSHM_MCTX, 1, 1, 64);
  ASSERT_FALSE(q.IsNull());
  Reaper reaper;
  // Child 0 produces forever and gets killed; children 1 and 2 share its
  // lane and must still deliver everything.
  for (int c = 0; c < 3; ++c) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) Produce(&alloc, q.ptr_, c, 0, c == 0 ? 0 : kCount);
    reaper.pids.push_back(pid);
  }
  std::map<hshm::u32, std::vector<hshm::u64>> got;
  // Let everyone run, then kill child 0 at an arbitrary point.
  usleep(20000);
  ASSERT_TRUE(Drain(&alloc, q.ptr_, &got));
  kill(reaper.pids[0], SIGKILL);
  waitpid(reaper.pids[0], nullptr, 0);
  uint64_t deadline = hshm::NowNs() + 60ull * 1000000000;
  while (got[1].size() < kCount || got[2].size() < kCount) {
    ASSERT_TRUE(Drain(&alloc, q.ptr_, &got));
    ASSERT_LT(hshm::NowNs(), deadline) << "survivors were blocked";
    usleep(50);
  }
  for (int c = 1; c < 3; ++c) {
    for (hshm::u64 i = 0; i < kCount; ++i) ASSERT_EQ(got[c][i], i);
  }
  // The killed child's items arrived at most once each and in order.
  for (size_t i = 0; i < got[0].size(); ++i) ASSERT_EQ(got[0][i], i);
  // The allocator still serves: allocate and free a lot more.
  std::vector<hipc::FullPtr<char>> ptrs;
  for (int i = 0; i < 10000; ++i) {
    ptrs.push_back(alloc.Allocate(HSHM_MCTX, 64 + i % 500));
    ASSERT_FALSE(ptrs.back().IsNull());
  }
  for (auto &p : ptrs) ASSERT_TRUE(alloc.Free(HSHM_MCTX, p.shm_).ok());
}

}  // namespace
