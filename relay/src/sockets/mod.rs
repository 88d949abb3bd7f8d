//! The two WebSocket endpoints once upgraded (the HTTP surface upgrades them): the agent's
//! (`agent`: challenge, signed hello, publish offers, receipts, until either side goes or the
//! device is revoked) and the viewer's (`viewer`: the roster, session requests, observing, the
//! operator's controls; `forward` carries them to the node that runs the session, R43). `wire` is what both share: typed messages, sends and closes with a
//! deadline, and the heartbeat that finds a peer gone silent.

pub mod agent;
pub mod forward;
pub mod viewer;
pub mod wire;
