//! Events of CLI commands: written into the node's log directly when no relay holds it, else
//! handed to the running relay (its ingest socket). Never a second file.

use std::sync::{Arc, Mutex};

use super::{AuditLog, AuditSettings, AuditUnavailable, OpenError};
use crate::events::{Commit, Event, EventSink};

pub enum CliSink {
    /// This process holds the log (no relay runs on this directory).
    Direct(Arc<AuditLog>),
    /// A running relay holds it: events go there.
    Forward { dir: std::path::PathBuf, pending: Mutex<Vec<Event>> },
}

impl CliSink {
    pub fn open(settings: &AuditSettings) -> Result<CliSink, OpenError> {
        match AuditLog::open(settings) {
            Ok(log) => Ok(CliSink::Direct(Arc::new(log))),
            Err(OpenError::Busy(dir)) => Ok(CliSink::Forward { dir, pending: Mutex::new(Vec::new()) }),
            Err(e) => Err(e),
        }
    }

    /// Ends the command: a log opened here gets its final checkpoint.
    pub fn close(&self) {
        if let CliSink::Direct(log) = self {
            log.close();
        }
    }
}

impl EventSink for CliSink {
    fn emit(&self, event: Event) {
        match self {
            CliSink::Direct(log) => log.append(event),
            CliSink::Forward { pending, .. } => pending.lock().unwrap_or_else(|e| e.into_inner()).push(event),
        }
    }

    fn committed(&self) -> Commit<'_> {
        match self {
            CliSink::Direct(log) => Box::pin(log.committed()),
            CliSink::Forward { dir, pending } => Box::pin(async move {
                let events = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
                super::forward_to_running_relay(dir, &events).await.map_err(|e| AuditUnavailable(format!("{e:#}")))
            }),
        }
    }

    fn available(&self) -> Result<(), AuditUnavailable> {
        match self {
            CliSink::Direct(log) => log.available(),
            // Act only if the running relay can take the event: an unlock nobody recorded
            // must not happen.
            CliSink::Forward { dir, .. } => {
                std::os::unix::net::UnixStream::connect(dir.join(super::ingest::SOCKET_FILE)).map(drop).map_err(|e| {
                    AuditUnavailable(format!(
                        "the running relay's audit socket in {} does not answer: {e}",
                        dir.display()
                    ))
                })
            }
        }
    }
}
