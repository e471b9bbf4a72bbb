// Umbrella header of Chimaera's Hermes SHM subset.
#ifndef HERMES_SHM_HERMES_SHM_H_
#define HERMES_SHM_HERMES_SHM_H_

#include "hermes_shm/bitfield.h"
#include "hermes_shm/config/base_config.h"
#include "hermes_shm/config/config_parse.h"
#include "hermes_shm/data_structures/multi_mpsc_queue.h"
#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/memory/memory_manager.h"
#include "hermes_shm/memory/pointer.h"
#include "hermes_shm/memory/posix_shm.h"
#include "hermes_shm/singleton.h"
#include "hermes_shm/status.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/types.h"
#include "hermes_shm/util/futex.h"

#endif  // HERMES_SHM_HERMES_SHM_H_
