//! RELP, rsyslog's reliable event logging protocol (client side): every message is answered, so
//! the sender knows exactly what the receiver accepted. No Rust client exists; the protocol is
//! small. Frame: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Largest response we accept (responses are short status lines).
const MAX_RESPONSE: usize = 64 * 1024;

/// One frame's bytes.
pub fn encode(txnr: u64, command: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("{txnr} {command} {}", data.len()).into_bytes();
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
    out
}

/// The `open` offer: RELP version 0, the syslog command.
pub fn open_offer() -> Vec<u8> {
    encode(1, "open", b"relp_version=0\nrelp_software=sightline-relay\ncommands=syslog")
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u64,
    pub command: String,
    pub data: Vec<u8>,
}

impl Frame {
    /// For `rsp` frames: whether the status code is 200.
    pub fn ok(&self) -> bool {
        self.command == "rsp" && self.data.starts_with(b"200")
    }
}

async fn token<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<(String, u8)> {
    let mut out = Vec::new();
    loop {
        let b = reader.read_u8().await?;
        if b == b' ' || b == b'\n' {
            return String::from_utf8(out).map(|s| (s, b)).map_err(|_| bad("non-UTF-8 header"));
        }
        out.push(b);
        if out.len() > max {
            return Err(bad("header field too long"));
        }
    }
}

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("RELP: {why}"))
}

/// Reads one frame.
pub async fn read_frame<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Frame> {
    // Tolerate stray line ends between frames.
    while reader.fill_buf().await?.first() == Some(&b'\n') {
        reader.consume(1);
    }
    let (txnr, _) = token(reader, 9).await?;
    let txnr: u64 = txnr.parse().map_err(|_| bad("bad transaction number"))?;
    let (command, _) = token(reader, 32).await?;
    let (len, after) = token(reader, 9).await?;
    let len: usize = len.parse().map_err(|_| bad("bad data length"))?;
    if len > MAX_RESPONSE {
        return Err(bad("response too large"));
    }
    let mut data = vec![0; len];
    if len > 0 {
        if after != b' ' {
            return Err(bad("data without separator"));
        }
        reader.read_exact(&mut data).await?;
        if reader.read_u8().await? != b'\n' {
            return Err(bad("frame without trailer"));
        }
    }
    Ok(Frame { txnr, command, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_encode_and_responses_parse() {
        assert_eq!(encode(2, "syslog", b"<86>1 x"), b"2 syslog 7 <86>1 x\n");
        assert_eq!(encode(9, "close", b""), b"9 close 0\n");
        let input: &[u8] = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n2 rsp 6 200 OK\n0 serverclose 0\n";
        let mut reader = tokio::io::BufReader::new(input);
        let open = read_frame(&mut reader).await.unwrap();
        assert!(open.ok() && open.txnr == 1);
        let ack = read_frame(&mut reader).await.unwrap();
        assert_eq!(ack, Frame { txnr: 2, command: "rsp".into(), data: b"200 OK".to_vec() });
        let close = read_frame(&mut reader).await.unwrap();
        assert_eq!((close.txnr, close.command.as_str()), (0, "serverclose"));
        assert!(read_frame(&mut reader).await.is_err(), "end of stream");
        let mut garbage = tokio::io::BufReader::new(&b"x rsp 6 200 OK\n"[..]);
        assert!(read_frame(&mut garbage).await.is_err());
    }
}
