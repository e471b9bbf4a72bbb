// ZeroMQ CURVE keys for the lightbeam transport: one cluster key pair that
// every node of a cluster holds. The ROUTER of each node is a CURVE server
// with the cluster secret key; each DEALER is a CURVE client whose own key
// pair is the cluster pair, and the server accepts only clients that prove
// they hold the cluster secret key (a ZAP check on the client's public key).
// So anyone holding the key file is a cluster member, and nobody else can
// deliver anything or read the traffic.
//
// The key file (written by chimaera_keygen, mode 0600) is plain text:
//   # comments and blank lines
//   public_key: <40 Z85 characters>
//   secret_key: <40 Z85 characters>
#ifndef HERMES_SHM_LIGHTBEAM_CURVE_H_
#define HERMES_SHM_LIGHTBEAM_CURVE_H_

#include <string>

#include "hermes_shm/status.h"

namespace hshm::lbm {

/** Characters of a Z85-encoded CURVE key (32 bytes). */
inline constexpr size_t kCurveKeyZ85Len = 40;

/** A CURVE key pair, both keys Z85-encoded. */
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

/** True if the linked libzmq supports CURVE (zmq_has("curve")). */
bool CurveAvailable();

/** A fresh random key pair (zmq_curve_keypair). Unimplemented if libzmq has
 * no CURVE support. */
StatusOr<CurveKeyPair> NewCurveKeyPair();

/** Ok if both keys are 40 valid Z85 characters and the public key is the one
 * the secret key derives; otherwise InvalidArgument saying which. */
Status CheckCurveKeyPair(const CurveKeyPair &keys);

/** The key file text for `keys` (comment lines included). */
std::string FormatCurveKeyFile(const CurveKeyPair &keys);

/** Parses key file text (see the file comment) and checks the pair.
 * InvalidArgument names the 1-based line or the missing/bad key. */
StatusOr<CurveKeyPair> ParseCurveKeyFile(const std::string &text);

/** Reads and parses the key file at `path` (no expansion). NotFound if it
 * does not exist, IoError if unreadable, InvalidArgument if it is malformed
 * or readable by other users (the secret key must stay private); every
 * message names the path. */
StatusOr<CurveKeyPair> ReadCurveKeyFile(const std::string &path);

/** Writes `keys` to `path` with mode 0600. Refuses (AlreadyExists) to
 * replace an existing file unless `overwrite`; a replacement is written to a
 * temporary file and renamed over `path`. Errors name the path. */
Status WriteCurveKeyFile(const std::string &path, const CurveKeyPair &keys,
                         bool overwrite);

}  // namespace hshm::lbm

#endif  // HERMES_SHM_LIGHTBEAM_CURVE_H_
