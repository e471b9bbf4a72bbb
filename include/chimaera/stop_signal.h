// The signal value shared by chimaera_stop_runtime and
// chimaera_start_runtime.
#ifndef CHIMAERA_STOP_SIGNAL_H_
#define CHIMAERA_STOP_SIGNAL_H_

namespace chi {

/** The value chimaera_stop_runtime queues with its SIGTERM (sigqueue) when
 * no worker took its stop request: chimaera_start_runtime then starts a
 * stop, but ignores it if one already runs (a plain second signal ends a
 * stop at once). */
inline constexpr int kStopToolSignalValue = 0x43485354;  // "CHST"

}  // namespace chi

#endif  // CHIMAERA_STOP_SIGNAL_H_
