//! The relay's own log on stderr (not the audit log): text for a person at a terminal, or one
//! JSON object per line for a log pipeline (R46): `timestamp`, `level`, `target`, `message`
//! and the event's fields at the top level, and `spans`, the spans the event happened in with
//! the fields that identify the work (a request's id, a socket's device or user, a session).
//! `RUST_LOG` filters both.

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the log for the process.
pub fn init(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into());
    let log = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().flatten_event(true).with_current_span(false).with_span_list(true).init(),
    }
}
