// chimaera_consumer: a client program built out of tree against the installed
// Chimaera package. It attaches to the runtime named by CHI_SERVER_CONF,
// checks an admin Echo, creates a pool of the out-of-tree ChiMod "ootmod"
// and checks its Reverse method on both containers. Exits 0 on success.
#include <cstdio>
#include <string>

#include "chimaera/chimaera.h"
#include "ootmod/ootmod_client.h"

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

}  // namespace

/** Attaches, runs the checks, detaches. */
int main() {
  if (!Check("CHIMAERA_CLIENT_INIT", CHIMAERA_CLIENT_INIT())) return 1;
  bool ok = RunChecks();
  CHIMAERA->ClientFinalize();
  printf("%s\n", ok ? "consumer: PASS" : "consumer: FAIL");
  return ok ? 0 : 1;
}
