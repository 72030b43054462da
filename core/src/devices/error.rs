//! What can go wrong reading device rules and handling devices.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("reading device policy file {path}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device policy file {path} is larger than {limit} bytes")]
    ConfigTooLarge { path: PathBuf, limit: u64 },
    #[error("device policy file {path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("device policy rule {rule:?}: {message}")]
    BadRule { rule: String, message: String },
    #[error("stand-in for device {major}:{minor} at {path}: {op}")]
    StandIn {
        major: u32,
        minor: u32,
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("reattaching device {major}:{minor} at {path}: {op}")]
    Reopen {
        major: u32,
        minor: u32,
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("sending signal {signal} to pid {pid}")]
    Signal {
        pid: i32,
        signal: i32,
        source: std::io::Error,
    },
}
