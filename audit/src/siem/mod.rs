//! Live forwarding of the audit log to SIEMs (R40): RFC 5424 over TCP or TLS with octet
//! counting (RFC 6587, RFC 5425), or over RELP; payload JSON (the canonical record) or CEF.
//!
//! The audit log itself is the spool: each destination keeps a cursor file (`siem-NAME.cursor`
//! in the audit directory: records and checkpoints sent) and reads the log from there. While a
//! SIEM is down nothing is lost and the relay does not wait for it; on reconnect the forwarder
//! resends from the cursor.
//! - RELP: the cursor moves only past messages the receiver answered `200 OK` (accepted into its
//!   queue): exactly what was acknowledged.
//! - TCP/TLS: there is no acknowledgement. The cursor moves once the bytes are written, and after
//!   a broken connection the forwarder resends what it wrote in the last `UNCONFIRMED` seconds
//!   (what a receiver that closed or crashed may not have taken in). The receiver can therefore
//!   see a message twice, never a gap the sender knows of; the sequence numbers in the structured
//!   data let the SIEM drop duplicates and see gaps. What cannot be covered: data the receiver's
//!   kernel acknowledged and the receiver then lost longer ago than that window.
//!
//! Only records already durable are sent, and a checkpoint only after the records it covers, so
//! the SIEM's copy can always be checked against the checkpoints it holds. Only `tls://` is
//! encrypted (the receiver's certificate checked against `--siem-ca`); `tcp://` and `relp://`
//! are plaintext.

mod forward;
mod relp;
mod syslog;

use std::path::PathBuf;
use std::str::FromStr;

pub use forward::spawn;

/// How the messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Relp,
}

/// What the message body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Payload {
    Json,
    Cef,
}

/// One SIEM receiver: `tcp://host:port`, `tls://host:port` or `relp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// A name for the cursor file.
    pub fn name(&self) -> String {
        let t = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Relp => "relp",
        };
        let host: String = self
            .host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        format!("{t}-{host}-{}", self.port)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Relp => "relp",
        };
        write!(f, "{t}://{}:{}", self.host, self.port)
    }
}

impl FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) =
            s.split_once("://").ok_or_else(|| format!("{s:?}: expected tcp://, tls:// or relp://HOST:PORT"))?;
        let transport = match scheme {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            "relp" => Transport::Relp,
            other => return Err(format!("{s:?}: unknown transport {other:?} (tcp, tls or relp)")),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("{s:?}: no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let port = port.trim_end_matches('/').parse::<u16>().map_err(|_| format!("{s:?}: bad port"))?;
        Ok(Destination { transport, host: host.to_owned(), port })
    }
}

/// Where and how the audit log is forwarded.
#[derive(Debug, Clone)]
pub struct SiemSettings {
    pub destinations: Vec<Destination>,
    pub payload: Payload,
    /// CA certificates (PEM) that TLS receivers' certificates must chain to; the system's roots
    /// are not used (a SIEM is an internal service with an internal CA).
    pub ca_cert: Option<PathBuf>,
    /// The audit directory (the spool).
    pub dir: PathBuf,
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_name_their_cursor() {
        let d: Destination = "relp://127.0.0.1:2514".parse().unwrap();
        assert_eq!(d, Destination { transport: Transport::Relp, host: "127.0.0.1".into(), port: 2514 });
        assert_eq!(d.name(), "relp-127.0.0.1-2514");
        assert_eq!("tls://[::1]:6514".parse::<Destination>().unwrap().host, "::1");
        for bad in ["udp://x:1", "tcp://x", "tcp://:1", "x:1", "tcp://x:99999"] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
    }
}
