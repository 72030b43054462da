//! Clocks and POSIX timers.

/// `CLOCK_MONOTONIC` now.
pub fn monotonic() -> rustix::time::Timespec {
    rustix::time::clock_gettime(rustix::time::ClockId::Monotonic)
}
