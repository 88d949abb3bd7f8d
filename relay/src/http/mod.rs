//! The relay's HTTP surface, by concept.

pub mod recordings;
