//! The embedded journal (placeholder until the storage layer lands).
#![allow(dead_code)]

mod record;

pub(crate) type Lsn = u64;
