#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_net_decoder into corpus/net_decoder/.

Each seed is [u8 self][u8 num_nodes] followed by frames, each
[u32 len][len bytes], all little-endian. The frames form a lightbeam message
as node `src` sends it to node `self` (see WireHeader in
include/hermes_shm/lightbeam/transport.h): routing id (decimal src), the
64-byte header, the body ([u32 len][u32 nframes][len bytes] per record), then
the data frames. Run it from anywhere; it overwrites the seeds it names.
"""
import os
import struct

MAGIC = 0x4C424D31
VERSION = 4
RECORDS, PING, PONG = 1, 2, 3


def header(kind, src, dst, num_records, num_frames, body_size,
           magic=MAGIC, version=VERSION, incarnation=0x1122334455667788,
           max_message_bytes=1 << 30, dst_deaths=0, dst_incarnation=0):
    """Packs a WireHeader (64 bytes, no padding)."""
    return struct.pack("<IHHIIQIIQQQQ", magic, version, kind, src, dst,
                       incarnation, num_records, num_frames, body_size,
                       max_message_bytes, dst_deaths, dst_incarnation)


def body(records):
    """Packs records given as (bytes, nframes) pairs into a body frame."""
    return b"".join(struct.pack("<II", len(b), nf) + b for b, nf in records)


def seed(self_node, num_nodes, frames):
    """Packs one fuzzer input."""
    out = bytes([self_node, num_nodes])
    for f in frames:
        out += struct.pack("<I", len(f)) + f
    return out


def records_msg(src, dst, records, data_frames, **kw):
    """The frames of a kRecords message from src to dst."""
    b = body(records)
    h = header(RECORDS, src, dst, len(records), len(data_frames), len(b), **kw)
    return [str(src).encode(), h, b] + data_frames


def control_msg(kind, src, dst):
    """The frames of a ping or pong from src to dst."""
    return [str(src).encode(), header(kind, src, dst, 0, 0, 0), b""]


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                       "net_decoder")
    os.makedirs(out, exist_ok=True)
    one = [(b"hello", 0)]
    three = [(b"a" * 12, 1), (b"", 0), (b"task-bytes", 2)]
    seeds = {
        # Valid messages.
        "valid_ping": seed(1, 3, control_msg(PING, 2, 1)),
        "valid_pong": seed(3, 3, control_msg(PONG, 1, 3)),
        "valid_control_ping": seed(
            1, 3, [b"c2"] + control_msg(PING, 2, 1)[1:]),
        "records_on_control": seed(
            2, 4, [b"c1"] + records_msg(1, 2, one, [])[1:]),
        "valid_one_record": seed(2, 4, records_msg(1, 2, one, [])),
        "valid_three_records": seed(
            1, 3, records_msg(3, 1, three, [b"frame0", b"f1", b""])),
        "valid_node_12": seed(
            2, 16, records_msg(12, 2, [(b"x" * 40, 1)], [b"\0" * 64])),
        # Slightly invalid ones (each should be refused for one reason).
        "bad_magic": seed(1, 2, records_msg(2, 1, one, [], magic=0)),
        "bad_version": seed(1, 2, records_msg(2, 1, one, [], version=3)),
        "taken_for_dead": seed(
            1, 2, records_msg(2, 1, one, [], dst_deaths=3,
                                   dst_incarnation=0x99)),
        "small_max_message_bytes": seed(
            1, 2, records_msg(2, 1, one, [], max_message_bytes=1024)),
        "wrong_dst": seed(1, 3, records_msg(2, 3, one, [])),
        "self_src": seed(1, 3, records_msg(1, 1, one, [])),
        "bad_routing_id": seed(1, 3, [b"3"] + records_msg(2, 1, one, [])[1:]),
        "missing_data_frame": seed(
            1, 3, records_msg(3, 1, three, [b"frame0", b"f1", b""])[:-1]),
        "truncated_body": seed(
            1, 3, records_msg(2, 1, three, [b"a", b"b", b"c"])[:2] +
            [body(three)[:-3], b"a", b"b", b"c"]),
        "ping_with_payload": seed(
            1, 2, [b"2", header(PING, 2, 1, 1, 0, 13), body(one)]),
        "two_frames": seed(1, 2, control_msg(PING, 2, 1)[:2]),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
