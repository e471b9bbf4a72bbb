// libFuzzer target for the lightbeam network decoder
// (hshm::lbm::DecodeMessage), the check every message received from a peer
// passes before any of its bytes are used.
//
// Input layout (gen_net_corpus.py writes seeds in it):
//   [u8 self][u8 num_nodes] then frames, each [u32 len (LE)][len bytes]; a
//   length past the end of the input is cut to what is left.
// Each frame is copied into a heap buffer of exactly its size, so a read past
// a frame's end is caught by AddressSanitizer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "hermes_shm/lightbeam/transport.h"

namespace {

using hshm::u32;
using hshm::u64;
using hshm::lbm::WireHeader;
using hshm::lbm::WireRecordRef;

/** Most frames taken from one input (the decoder only counts data frames). */
constexpr size_t kMaxFrames = 4096;

/** One frame in its own, exactly sized heap allocation. */
struct Frame {
  std::unique_ptr<char[]> bytes;
  size_t size = 0;
  /** The frame's bytes. */
  std::string_view view() const { return {bytes.get(), size}; }
};

/** Splits `data` into frames as described at the top of the file. */
std::vector<Frame> SplitFrames(const uint8_t *data, size_t size) {
  std::vector<Frame> frames;
  size_t pos = 0;
  while (pos < size && frames.size() < kMaxFrames) {
    u32 len = 0;
    size_t header = size - pos < 4 ? size - pos : 4;
    memcpy(&len, data + pos, header);
    pos += header;
    size_t n = len < size - pos ? len : size - pos;
    Frame f;
    f.bytes.reset(new char[n ? n : 1]);
    if (n) memcpy(f.bytes.get(), data + pos, n);
    f.size = n;
    frames.push_back(std::move(f));
    pos += n;
  }
  return frames;
}

/** Aborts (a finding for libFuzzer) unless `ok`. */
void Require(bool ok) {
  if (!ok) abort();
}

}  // namespace

/** Decodes one input and checks the decoded view against the frames. */
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const u32 self = data[0];
  const u32 num_nodes = data[1];
  std::vector<Frame> frames = SplitFrames(data + 2, size - 2);
  auto view = [&frames](size_t i) {
    return i < frames.size() ? frames[i].view() : std::string_view();
  };
  WireHeader h{};
  std::vector<WireRecordRef> records;
  const char *why = hshm::lbm::DecodeMessage(
      frames.size(), view(0), view(1), view(2), self, num_nodes, &h, &records);
  if (why != nullptr) {
    Require(*why != '\0');
    return 0;
  }
  // A valid message: everything the receiver will touch must lie inside it.
  Require(frames.size() >= 3);
  Require(h.src_node >= 1 && h.src_node <= num_nodes && h.src_node != self);
  Require(h.dst_node == self);
  Require(h.num_frames == frames.size() - 3);
  Require(h.max_message_bytes >= hshm::lbm::kMinMessageBytes);
  if (h.kind != static_cast<uint16_t>(hshm::lbm::MsgKind::kRecords)) {
    Require(h.body_size == 0 && h.num_records == 0 && h.num_frames == 0);
    return 0;
  }
  Require(records.size() == h.num_records && !records.empty());
  const std::string_view body = view(2);
  u64 next = 0, data_frames = 0;
  unsigned sum = 0;
  for (const WireRecordRef &r : records) {
    Require(r.offset >= next + 8 && r.offset <= body.size());
    Require(r.len <= body.size() - r.offset);
    for (u32 i = 0; i < r.len; ++i) sum += body[r.offset + i];
    next = r.offset + r.len;
    data_frames += r.nframes;
  }
  Require(next == body.size());
  Require(data_frames == h.num_frames);
  for (size_t i = 3; i < frames.size(); ++i) {
    if (frames[i].size) sum += frames[i].view().back();
  }
  volatile unsigned sink = sum;
  (void)sink;
  return 0;
}
