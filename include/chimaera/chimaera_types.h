// Core identifiers of Chimaera: pools, containers, task nodes, methods and
// domain queries. All are small, trivially copyable and string-free, so they
// live in shared memory and travel over the network as plain bytes.
#ifndef CHIMAERA_CHIMAERA_TYPES_H_
#define CHIMAERA_CHIMAERA_TYPES_H_

#include <string>

#include "hermes_shm/bitfield.h"
#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/status.h"
#include "hermes_shm/types.h"

#ifndef CHIMAERA_RUNTIME
#error "CHIMAERA_RUNTIME must be defined (1 in runtime objects, 0 in clients)"
#endif

namespace chi {

using hshm::i32;
using hshm::i64;
using hshm::ibitfield;
using hshm::Status;
using hshm::StatusCode;
using hshm::StatusOr;
using hshm::u32;
using hshm::u64;
using hshm::u8;
template <typename T>
using FullPtr = hipc::FullPtr<T>;

/** Version of the module ABI (task layout, container interface). A ChiMod
 * built against another version refuses to load. */
static GLOBAL_CROSS_CONST u32 kModuleAbiVersion = 6;

/** Identifies a node (1-based; 0 means "this node / unknown"). */
using NodeId = u32;
/** Identifies a method of a container. */
using MethodId = u32;
/** Identifies a container inside its pool (0-based). */
using ContainerId = u32;
/** Identifies a queue of a container. */
using QueueId = u32;

/** Identifies a pool everywhere in the system. */
struct PoolId {
  u32 node_id_ = ~0u;  ///< Node that created the pool.
  u32 unique_ = ~0u;   ///< Counter on that node.

  PoolId() = default;
  PoolId(u32 node_id, u32 unique) : node_id_(node_id), unique_(unique) {}
  /** The null pool id (the default). */
  static PoolId GetNull() { return PoolId(); }
  bool IsNull() const { return node_id_ == ~0u && unique_ == ~0u; }
  /** A 64-bit key for hash maps. */
  u64 ToU64() const { return (static_cast<u64>(node_id_) << 32) | unique_; }
  bool operator==(const PoolId &o) const {
    return node_id_ == o.node_id_ && unique_ == o.unique_;
  }
  bool operator!=(const PoolId &o) const { return !(*this == o); }
  /** "node.unique", for messages. */
  std::string ToString() const;
};

/** The admin pool: present on every node from start-up. */
static inline const PoolId kAdminPoolId{0, 0};

/** Position of a task in its task graph: tasks spawned (transitively) by one
 * root task share major_ (the root's id); minor_ is the depth. */
struct TaskNode {
  u64 major_ = 0;
  u32 minor_ = 0;

  TaskNode() = default;
  TaskNode(u64 major, u32 minor) : major_(major), minor_(minor) {}
  /** The node of a subtask of this task. */
  TaskNode Child() const { return TaskNode(major_, minor_ + 1); }
  bool operator==(const TaskNode &o) const {
    return major_ == o.major_ && minor_ == o.minor_;
  }
};

/** Major identifier of a subdomain. */
typedef u32 SubDomainGroup;
/** Minor identifier of a subdomain. */
typedef u32 SubDomainMinor;

/** Most containers one pool may have. The admin pool has one per node, so
 * this is also the most nodes a hostfile may list. */
static GLOBAL_CROSS_CONST u32 kMaxContainers = 4096;

namespace SubDomain {
/** Maps to an IP address of a node. */
static GLOBAL_CROSS_CONST SubDomainGroup kPhysicalNode = 0;
/** Maps to a logical address global to the entire pool. */
static GLOBAL_CROSS_CONST SubDomainGroup kGlobal = 1;
/** Maps to a logical address local to this node. */
static GLOBAL_CROSS_CONST SubDomainGroup kLocal = 2;
}  // namespace SubDomain
// NOTE: a namespace of constants rather than a class with static members, for
// GPU compatibility (CUDA has no static class variables).

/** The address of a container within its pool. */
struct SubDomainId {
  SubDomainGroup major_ = SubDomain::kGlobal;  ///< NodeSet, ContainerSet, ...
  SubDomainMinor minor_ = 0;                   ///< NodeId, ContainerId, ...

  SubDomainId() = default;
  SubDomainId(SubDomainGroup major, SubDomainMinor minor)
      : major_(major), minor_(minor) {}
  bool operator==(const SubDomainId &o) const {
    return major_ == o.major_ && minor_ == o.minor_;
  }
};

/** The address of a container in the entire system. */
struct DomainId {
  PoolId pool_id_;
  SubDomainId sub_id_;

  DomainId() = default;
  DomainId(PoolId pool_id, SubDomainId sub_id)
      : pool_id_(pool_id), sub_id_(sub_id) {}
  bool operator==(const DomainId &o) const {
    return pool_id_ == o.pool_id_ && sub_id_ == o.sub_id_;
  }
};

/** How a container decides where work goes (Container::Monitor). */
enum class MonitorMode : u32 {
  kGlobalSchedule = 0,  ///< Choose the container(s) for a GetDynamic() task.
  kEstLoad = 1,         ///< Estimate the cost of a task (reinforcement).
};

/** Selects containers of a pool: small and string-free (not SQL). */
struct DomainQuery {
  /** Which selection this query makes. */
  enum Kind : u32 {
    kLocalId = 0,      ///< Container `sel_` among this node's containers.
    kGlobalId = 1,     ///< Container with global id `sel_`.
    kLocalHash = 2,    ///< This node's containers, index `sel_ % count`.
    kGlobalHash = 3,   ///< All containers, index `sel_ % count`.
    kGlobalBcast = 4,  ///< Every node of the pool's domain.
    kDynamic = 5,      ///< Ask the container's Monitor(kGlobalSchedule).
  };
  u32 kind_ = kLocalHash;
  u32 sel_ = 0;

  /** Send the task to the container with local address `id`. */
  static DomainQuery GetLocalId(u32 id) { return DomainQuery(kLocalId, id); }
  /** Send the task to the container with global address `id`. */
  static DomainQuery GetGlobalId(u32 id) { return DomainQuery(kGlobalId, id); }
  /** Hash the task to one of this node's containers. */
  static DomainQuery GetLocalHash(u32 hash) {
    return DomainQuery(kLocalHash, hash);
  }
  /** Hash the task to one of all the pool's containers. */
  static DomainQuery GetGlobalHash(u32 hash) {
    return DomainQuery(kGlobalHash, hash);
  }
  /** Replicate the task to every node in the domain. */
  static DomainQuery GetGlobalBcast() { return DomainQuery(kGlobalBcast, 0); }
  /** Let the container's Monitor(kGlobalSchedule) decide. */
  static DomainQuery GetDynamic() { return DomainQuery(kDynamic, 0); }

  DomainQuery() = default;
  DomainQuery(u32 kind, u32 sel) : kind_(kind), sel_(sel) {}
  /** The subdomain this query addresses. */
  SubDomainGroup GetGroup() const {
    return (kind_ == kLocalId || kind_ == kLocalHash) ? SubDomain::kLocal
                                                      : SubDomain::kGlobal;
  }
};

/** Priorities of the process queue (and of container lanes). */
enum TaskPrio : u32 {
  kLowLatency = 0,   ///< Short tasks; drained by low-latency workers.
  kHighLatency = 1,  ///< Long tasks; drained by high-latency workers.
  kNumPrios = 2,
};

}  // namespace chi

#endif  // CHIMAERA_CHIMAERA_TYPES_H_
