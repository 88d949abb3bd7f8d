//! CLI commands (`relay unlock`, `relay agent-token create`) run beside a relay that holds the
//! audit log; their events must land in that same log, never in a second file. The running relay
//! listens on a Unix socket in its audit directory (mode 0600 within a 0700 directory, so only
//! the relay's own account can reach it); a CLI that cannot take the log's lock hands its events
//! there, one JSON line each, and waits for `ok` (the event is on disk) before it reports success.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::AuditLog;
use crate::events::Event;

pub const SOCKET_FILE: &str = "ingest.sock";
/// Largest event line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Serves the ingest socket until the task is aborted. Call only while holding the log's lock.
pub fn serve(dir: &Path, log: Arc<AuditLog>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET_FILE);
    // A socket file left by a relay that died: we hold the lock, so it is not in use.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(serve_one(stream, log.clone()));
        }
    }))
}

async fn serve_one(stream: UnixStream, log: Arc<AuditLog>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE as u64 * 64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = if line.len() > MAX_LINE {
            "error: event too large".to_owned()
        } else {
            match sightline_proto::strict::from_str::<Event>(&line) {
                Ok(mut event) => {
                    // The relay's clock, not the sender's; the CLI runs as the relay's account.
                    event.ts_ms = now_ms();
                    event.source = None;
                    log.append(event);
                    match log.committed().await {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => format!("error: {e}"),
                    }
                }
                Err(e) => format!("error: not an audit event: {e}"),
            }
        };
        if write.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Hands events to the relay that holds the log in `dir`; returns once each is on disk there.
pub async fn forward_to_running_relay(dir: &Path, events: &[Event]) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = dir.join(SOCKET_FILE);
    let stream = UnixStream::connect(&path)
        .await
        .with_context(|| format!("the audit log is held by another process, and {} does not answer", path.display()))?;
    let (read, mut write) = stream.into_split();
    let mut answers = BufReader::new(read).lines();
    for event in events {
        let mut line = serde_json::to_string(event)?;
        line.push('\n');
        write.write_all(line.as_bytes()).await?;
        match answers.next_line().await? {
            Some(answer) if answer == "ok" => {}
            Some(answer) => anyhow::bail!("the running relay did not record the event: {answer}"),
            None => anyhow::bail!("the running relay closed the audit socket"),
        }
    }
    Ok(())
}
