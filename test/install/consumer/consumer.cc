// chimaera_consumer: a client program built out of tree against the installed
// Chimaera package. It attaches to the runtime named by CHI_SERVER_CONF,
// checks an admin Echo, creates a pool of the out-of-tree ChiMod "ootmod"
// and checks its Reverse method on both containers, then exercises the
// "stats" ChiMod (Add/Get by key hash, Histogram, a fanned-out Total), and
// echoes bytes through the shipped small_message ChiMod, whose client it
// links as the package's target chimaera::small_message_client.
// Exits 0 on success.
#include <cstdio>
#include <cstring>
#include <string>

#include "chimaera/chimaera.h"
#include "ootmod/ootmod_client.h"
#include "small_message/small_message_client.h"
#include "stats/stats.h"

namespace {

/** Prints `what` and `s` to stderr if `s` is an error; returns s.ok(). */
bool Check(const char *what, const hshm::Status &s) {
  if (!s.ok())
    fprintf(stderr, "consumer: %s: %s\n", what, s.ToString().c_str());
  return s.ok();
}

/** Runs the checks against an attached runtime; true if all pass. */
bool RunChecks() {
  chi::admin::Client admin;
  auto echo = admin.Echo(0x0123456789abcdefull);
  if (!Check("admin Echo", echo.status())) return false;
  if (*echo != 0x0123456789abcdefull) {
    fprintf(stderr, "consumer: Echo returned %llx\n",
            static_cast<unsigned long long>(*echo));
    return false;
  }
  printf("admin Echo ok\n");

  ootmod::Client oot;
  if (!Check("GetOrCreatePool(oot_pool, ootmod, 2)",
             oot.Create("oot_pool", 2))) {
    return false;
  }
  printf("pool oot_pool = %s\n", oot.pool_id().ToString().c_str());
  const std::string input = "chimaera out-of-tree";
  const std::string expect(input.rbegin(), input.rend());
  bool seen[2] = {false, false};
  for (chi::u32 c = 0; c < 2; ++c) {
    auto res = oot.Reverse(input, chi::DomainQuery::GetLocalId(c));
    if (!Check("ootmod Reverse", res.status())) return false;
    if (res->text != expect) {
      fprintf(stderr, "consumer: Reverse gave '%s', expected '%s'\n",
              res->text.c_str(), expect.c_str());
      return false;
    }
    if (res->container_id < 2) seen[res->container_id] = true;
    printf("ootmod Reverse('%s') = '%s' on container %u\n", input.c_str(),
           res->text.c_str(), res->container_id);
  }
  if (!seen[0] || !seen[1]) {
    fprintf(stderr, "consumer: expected both containers to answer\n");
    return false;
  }
  return true;
}

/** Checks the stats module on a 3-container pool; true if all pass. */
bool CheckStats() {
  stats::Client st;
  if (!Check("create stats_pool", st.Create("stats_pool", 3))) return false;
  chi::u64 want_sum = 0;
  for (chi::u64 key = 1; key <= 20; ++key) {
    for (chi::u64 v = 1; v <= key; ++v) {
      auto add = st.Call<stats::AddTask>(
          chi::DomainQuery::GetGlobalHash(static_cast<chi::u32>(key)), key, v);
      if (!Check("stats Add", add.status())) return false;
      want_sum += v;
    }
  }
  auto get = st.Call<stats::GetTask>(chi::DomainQuery::GetGlobalHash(7), 7ull);
  if (!Check("stats Get", get.status())) return false;
  if (get->total_.sum != 28 || get->total_.count != 7) {
    fprintf(stderr, "consumer: Get(7) = %llu/%llu, expected 28/7\n",
            static_cast<unsigned long long>(get->total_.sum),
            static_cast<unsigned long long>(get->total_.count));
    return false;
  }
  auto missing =
      st.Call<stats::GetTask>(chi::DomainQuery::GetGlobalHash(99), 99ull);
  if (missing.status().code() != hshm::StatusCode::kNotFound) {
    fprintf(stderr, "consumer: Get(99) gave %s, expected NotFound\n",
            missing.status().ToString().c_str());
    return false;
  }
  auto total = st.Call<stats::TotalTask>();
  if (!Check("stats Total", total.status())) return false;
  if (total->total_.sum != want_sum || total->total_.count != 210) {
    fprintf(stderr, "consumer: Total = %llu/%llu, expected %llu/210\n",
            static_cast<unsigned long long>(total->total_.sum),
            static_cast<unsigned long long>(total->total_.count),
            static_cast<unsigned long long>(want_sum));
    return false;
  }
  const chi::u64 n = 1000;
  chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(n * sizeof(chi::u64));
  if (buf.IsNull())
    return Check("AllocateBuffer", hshm::Status::OutOfMemory(""));
  for (chi::u64 i = 0; i < n; ++i) {
    std::memcpy(buf.ptr_ + i * 8, &i, 8);
  }
  auto hist = st.Async<stats::HistogramTask>(buf.shm_, n * 8);
  bool ok = Check("stats Histogram", hist.Wait());
  for (int b = 0; ok && b < 16; ++b) {
    chi::u64 want = n / 16 + (static_cast<chi::u64>(b) < n % 16 ? 1 : 0);
    if (hist->bins_[b] != want) {
      fprintf(stderr, "consumer: bin %d = %llu, expected %llu\n", b,
              static_cast<unsigned long long>(hist->bins_[b]),
              static_cast<unsigned long long>(want));
      ok = false;
    }
  }
  if (hist.done()) (void)CHI_IPC->FreeBuffer(buf.shm_);
  if (!ok) return false;
  printf("stats: Add x210, Get, Total over 3 containers, Histogram ok\n");
  return Check("destroy stats_pool", st.Destroy());
}

/** Echoes bytes through a pool of the shipped small_message ChiMod; true
 * if they come back unchanged. */
bool CheckShippedModule() {
  chi::small_message::Client sm;
  if (!Check("create consumer_sm", sm.Create("consumer_sm", 1))) return false;
  const std::string bytes = "through an installed ChiMod";
  auto echo = sm.Echo(bytes);
  if (!Check("small_message Echo", echo.status())) return false;
  if (*echo != bytes) {
    fprintf(stderr, "consumer: Echo gave '%s', expected '%s'\n", echo->c_str(),
            bytes.c_str());
    return false;
  }
  printf("small_message Echo ok\n");
  return Check("destroy consumer_sm", sm.Destroy());
}

}  // namespace

/** Attaches, runs the checks, detaches. */
int main() {
  if (!Check("CHIMAERA_CLIENT_INIT", CHIMAERA_CLIENT_INIT())) return 1;
  bool ok = RunChecks() && CheckStats() && CheckShippedModule();
  CHIMAERA->ClientFinalize();
  printf("%s\n", ok ? "consumer: PASS" : "consumer: FAIL");
  return ok ? 0 : 1;
}
