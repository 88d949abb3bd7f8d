//! The forwarding loop of one destination: connect, send from the cursor, move the cursor only as
//! far as the transport confirms, reconnect with backoff.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sightline_core::audit::{Record, leaf_hash};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::{Destination, Payload, SiemSettings, Transport, relp, syslog};
use crate::Progress;
use crate::files::{CHECKPOINT_FILE, LOG_FILE};

/// Most records per write (and per RELP window).
const BATCH: usize = 256;
/// After a broken TCP/TLS connection, what was written this recently is sent again.
const UNCONFIRMED: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A RELP receiver that does not answer within this is treated as gone.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts one forwarder per destination.
pub fn spawn(
    settings: SiemSettings,
    progress: watch::Receiver<Progress>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let tls = if settings.destinations.iter().any(|d| d.transport == Transport::Tls) {
        let ca = settings
            .ca_cert
            .as_deref()
            .context("a tls:// SIEM destination needs --siem-ca (the CA of the receiver's certificate)")?;
        Some(tls_connector(ca)?)
    } else {
        None
    };
    Ok(settings
        .destinations
        .iter()
        .map(|dest| {
            let forwarder = Forwarder {
                dest: dest.clone(),
                payload: settings.payload,
                tls: tls.clone(),
                dir: settings.dir.clone(),
                node: settings.node.clone(),
            };
            tokio::spawn(forwarder.run(progress.clone()))
        })
        .collect())
}

fn tls_connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("cannot read {}", ca.display()))? {
        roots.add(cert.with_context(|| format!("invalid PEM in {}", ca.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Where a destination stands in the log: persisted, so a restart resends nothing confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// Records sent (and, for RELP, acknowledged): the next one to send is this sequence number.
    records: u64,
    /// Checkpoints sent.
    checkpoints: u64,
}

impl Cursor {
    fn load(path: &Path) -> Cursor {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Written to a temporary file and renamed, so a crash leaves the old or the new cursor. Not
    /// synced: an older cursor after a power loss only means messages sent twice.
    fn store(&self, path: &Path) {
        let tmp = path.with_extension("cursor.tmp");
        let result = std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot store the SIEM cursor (messages may be sent again after a restart)");
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Forwarder {
    dest: Destination,
    payload: Payload,
    tls: Option<tokio_rustls::TlsConnector>,
    dir: PathBuf,
    node: String,
}

impl Forwarder {
    async fn run(self, mut progress: watch::Receiver<Progress>) {
        let cursor_path = self.dir.join(format!("siem-{}.cursor", self.dest.name()));
        let mut cursor = Cursor::load(&cursor_path);
        let mut spool = Spool::new(&self.dir);
        let mut backoff = Duration::from_millis(250);
        loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(Ok(stream)) => {
                    tracing::info!(siem = %self.dest, from = cursor.records, "SIEM connected");
                    backoff = Duration::from_millis(250);
                    let e = self.serve(stream, &mut cursor, &cursor_path, &mut spool, &mut progress).await;
                    tracing::warn!(siem = %self.dest, error = %e, resend_from = cursor.records, "SIEM connection lost");
                }
                Ok(Err(e)) => tracing::warn!(siem = %self.dest, error = %e, "cannot reach the SIEM; the log spools"),
                Err(_) => tracing::warn!(siem = %self.dest, "SIEM connection timed out; the log spools"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> anyhow::Result<BufReader<Box<dyn Stream>>> {
        let tcp = tokio::net::TcpStream::connect((self.dest.host.as_str(), self.dest.port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match (&self.dest.transport, &self.tls) {
            (Transport::Tls, Some(tls)) => {
                let name = rustls::pki_types::ServerName::try_from(self.dest.host.clone())?;
                Box::new(tls.connect(name, tcp).await?)
            }
            (Transport::Tls, None) => anyhow::bail!("TLS without a CA"),
            _ => Box::new(tcp),
        };
        let mut stream = BufReader::new(stream);
        if self.dest.transport == Transport::Relp {
            stream.get_mut().write_all(&relp::open_offer()).await?;
            let answer = tokio::time::timeout(ACK_TIMEOUT, relp::read_frame(&mut stream)).await??;
            if !answer.ok() || answer.txnr != 1 {
                anyhow::bail!("RELP open refused: {}", String::from_utf8_lossy(&answer.data));
            }
        }
        Ok(stream)
    }

    /// Sends until the connection breaks; returns why.
    async fn serve(
        &self,
        mut stream: BufReader<Box<dyn Stream>>,
        cursor: &mut Cursor,
        cursor_path: &Path,
        spool: &mut Spool,
        progress: &mut watch::Receiver<Progress>,
    ) -> anyhow::Error {
        // TCP/TLS: cursors before recent writes, to resend after a break.
        let mut recent: VecDeque<(Instant, Cursor)> = VecDeque::new();
        let mut txnr: u64 = 1;
        let result: anyhow::Result<()> = async {
            loop {
                let durable = progress.borrow_and_update().size;
                let records = spool.records(cursor.records, durable, BATCH).await?;
                let sent_through = cursor.records + records.len() as u64;
                let checkpoints = spool.checkpoints(cursor.checkpoints, sent_through).await?;
                if records.is_empty() && checkpoints.is_empty() {
                    // Idle: wait for the log to grow, and notice a receiver that hangs up.
                    let mut probe = [0u8; 256];
                    tokio::select! {
                        _ = progress.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        read = stream.get_mut().read(&mut probe), if self.dest.transport != Transport::Relp => match read {
                            Ok(0) => anyhow::bail!("the receiver closed the connection"),
                            Err(e) => return Err(e.into()),
                            Ok(_) => {}
                        },
                    }
                    continue;
                }
                let mut messages: Vec<String> = records
                    .iter()
                    .map(|(record, line)| syslog::record_message(record, line, &leaf_hash(line).to_string(), self.payload))
                    .collect();
                let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                messages.extend(checkpoints.iter().map(|(size, note)| syslog::checkpoint_message(&self.node, *size, note, now_ms)));
                match self.dest.transport {
                    Transport::Relp => {
                        let mut out = Vec::new();
                        let first = txnr + 1;
                        for message in &messages {
                            txnr += 1;
                            out.extend(relp::encode(txnr, "syslog", message.as_bytes()));
                        }
                        stream.get_mut().write_all(&out).await?;
                        stream.get_mut().flush().await?;
                        for expected in first..=txnr {
                            let frame = tokio::time::timeout(ACK_TIMEOUT, relp::read_frame(&mut stream)).await.context("no RELP answer")??;
                            if frame.command == "serverclose" {
                                anyhow::bail!("the RELP receiver closed the session");
                            }
                            if frame.txnr != expected || !frame.ok() {
                                anyhow::bail!("RELP answer {} to {expected}: {}", frame.txnr, String::from_utf8_lossy(&frame.data));
                            }
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        let mut out = Vec::new();
                        for message in &messages {
                            out.extend(syslog::frame(message));
                        }
                        recent.push_back((Instant::now(), *cursor));
                        while recent.front().is_some_and(|(t, _)| t.elapsed() > UNCONFIRMED) {
                            recent.pop_front();
                        }
                        stream.get_mut().write_all(&out).await?;
                        stream.get_mut().flush().await?;
                    }
                }
                cursor.records = sent_through;
                cursor.checkpoints += checkpoints.len() as u64;
                cursor.store(cursor_path);
            }
        }
        .await;
        let error = result.err().unwrap_or_else(|| anyhow::anyhow!("stopped"));
        if let Some((_, before)) = recent.iter().find(|(t, _)| t.elapsed() <= UNCONFIRMED) {
            // Unconfirmed: a receiver that went away may not have taken these in.
            *cursor = *before;
            cursor.store(cursor_path);
        }
        error
    }
}

/// Reads the log and the checkpoints file from a position, up to what is durable.
struct Spool {
    log: PathBuf,
    checkpoints: PathBuf,
    /// Byte offset and sequence number of the next record in the log file.
    at: (u64, u64),
    /// Byte offset and index of the next checkpoint line.
    cp_at: (u64, u64),
}

impl Spool {
    fn new(dir: &Path) -> Spool {
        Spool { log: dir.join(LOG_FILE), checkpoints: dir.join(CHECKPOINT_FILE), at: (0, 0), cp_at: (0, 0) }
    }

    /// Up to `max` records from sequence number `from`, not beyond `durable`.
    async fn records(&mut self, from: u64, durable: u64, max: usize) -> anyhow::Result<Vec<(Record, Vec<u8>)>> {
        if from < self.at.1 {
            self.at = (0, 0);
        }
        let mut out = Vec::new();
        if from >= durable {
            return Ok(out);
        }
        let mut file = tokio::fs::File::open(&self.log).await?;
        file.seek(std::io::SeekFrom::Start(self.at.0)).await?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while self.at.1 < durable && out.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).await?;
            if n == 0 || line.last() != Some(&b'\n') {
                break; // not written yet
            }
            self.at = (self.at.0 + n as u64, self.at.1 + 1);
            if self.at.1 > from {
                let bytes = line[..line.len() - 1].to_vec();
                let record =
                    Record::from_canonical(&bytes).map_err(|e| anyhow::anyhow!("record {}: {e}", self.at.1 - 1))?;
                out.push((record, bytes));
            }
        }
        Ok(out)
    }

    /// Checkpoints from index `from` whose size is at most `covered` (sent after their records).
    async fn checkpoints(&mut self, from: u64, covered: u64) -> anyhow::Result<Vec<(u64, String)>> {
        if from < self.cp_at.1 {
            self.cp_at = (0, 0);
        }
        let mut file = match tokio::fs::File::open(&self.checkpoints).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        file.seek(std::io::SeekFrom::Start(self.cp_at.0)).await?;
        let mut reader = BufReader::new(file);
        let mut out = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).await?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            let note: String = serde_json::from_str(line.trim_end()).context("malformed checkpoints file")?;
            let size = note.lines().nth(1).and_then(|s| s.parse::<u64>().ok()).context("checkpoint without a size")?;
            if self.cp_at.1 >= from {
                if size > covered {
                    break; // its records are not sent yet
                }
                out.push((size, note));
            }
            self.cp_at = (self.cp_at.0 + n as u64, self.cp_at.1 + 1);
        }
        Ok(out)
    }
}
