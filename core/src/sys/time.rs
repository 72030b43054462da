//! Clocks and POSIX timers.

/// `CLOCK_MONOTONIC` now.
pub fn monotonic() -> rustix::time::Timespec {
    rustix::time::clock_gettime(rustix::time::ClockId::Monotonic)
}

/// A POSIX timer of this process with the default notification (SIGALRM
/// to the process), deleted when dropped. Only tests make one.
#[cfg(test)]
#[derive(Debug)]
pub struct PosixTimer(libc::timer_t);

#[cfg(test)]
impl PosixTimer {
    /// `timer_create(clock, NULL)`.
    pub fn new(clock: libc::clockid_t) -> std::io::Result<Self> {
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: timer_create with a null sigevent and a valid out pointer.
        if unsafe { libc::timer_create(clock, std::ptr::null_mut(), &mut id) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(id))
    }
}

#[cfg(test)]
impl Drop for PosixTimer {
    fn drop(&mut self) {
        // SAFETY: deleting the timer this value made.
        unsafe { libc::timer_delete(self.0) };
    }
}
