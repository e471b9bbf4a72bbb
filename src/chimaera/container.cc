#include "chimaera/container.h"

#include "chimaera/ipc_manager.h"

namespace chi {

void Container::Monitor(MonitorMode mode, Task *task, RunContext &rctx) {
  if (mode == MonitorMode::kGlobalSchedule) {
    // Spread dynamic tasks over the local containers by task graph.
    task->dom_query_ = DomainQuery::GetLocalHash(
        static_cast<u32>(task->task_node_.major_ * 0x9E3779B1u));
  }
}

void Container::Run(Task *task, RunContext &rctx) {
  const MethodEntry *e = GetMethod(task->method_);
  if (!e) {
    internal::SetTaskStatus(
        task,
        Status::NotFound("module '" + module_name_ + "' (pool '" + pool_name_ +
                         "') has no method " + std::to_string(task->method_)));
    return;
  }
  e->run(this, const_cast<char *>(e->handler), task, rctx);
}

std::vector<std::string> Container::MethodNames() const {
  std::vector<std::string> out;
  for (auto &m : methods_) out.push_back(m.name ? m.name : "");
  return out;
}

}  // namespace chi
