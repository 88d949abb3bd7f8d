//! The two WebSocket endpoints once upgraded (the HTTP surface upgrades them): the agent's
//! (`agent`: challenge, signed hello, publish offers, receipts, until either side goes or the
//! device is revoked) and the viewer's (`viewer`: the roster, session requests, observing, the
//! operator's controls). `wire` is what both share: typed messages, sends and closes with a
//! deadline, and the heartbeat that finds a peer gone silent.

pub mod agent;
pub mod viewer;
pub mod wire;
