//! One module per `hiber` verb.

pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod demo;
pub mod inspect;
pub mod prune;
pub mod restore;
pub mod session;
