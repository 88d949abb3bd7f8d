//! The agent through a corporate HTTP proxy (R1): an HTTP `CONNECT` tunnel to the relay, with the
//! proxy's authentication, before TLS and the WebSocket start inside it.
//!
//! Where the proxy comes from, in order: `--proxy` (or `SIGHTLINE_PROXY`), else `HTTPS_PROXY` /
//! `https_proxy`; `NO_PROXY` / `no_proxy` lists hosts reached directly. Credentials come from
//! `--proxy-credentials FILE` (one line, `user:password`), else `SIGHTLINE_PROXY_USER` and
//! `SIGHTLINE_PROXY_PASSWORD`, else the proxy URL's own `user:password@`.
//!
//! Authentication is a conversation: the proxy answers 407 with the schemes it accepts, the agent
//! answers with credentials, and schemes such as NTLM and Negotiate (Kerberos) take more than one
//! round on the same connection. `Credentials::answer` is that conversation's one step; Basic
//! answers the first challenge and gives up on the second (the proxy refused the password).
//! NTLM/Negotiate would answer each challenge with the next token of an `sspi` context, on the
//! same kept-alive connection, which `tunnel` already holds across rounds.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy's answer head larger than this is not a proxy we can talk to.
const MAX_HEAD: usize = 16 * 1024;
/// Rounds of authentication before the agent gives up (Basic needs one; NTLM two).
const MAX_ROUNDS: usize = 3;
/// How long the proxy may take to open the tunnel.
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy setting {0:?} is not an http:// URL with a host and port")]
    BadUrl(String),
    #[error("cannot read the proxy credentials from {path}: {detail}")]
    Credentials { path: String, detail: String },
    #[error("cannot reach the proxy {proxy}: {detail}")]
    Unreachable { proxy: String, detail: String },
    #[error(
        "the proxy {proxy} asks for authentication ({schemes}; {status}) and the agent has no proxy credentials (--proxy-credentials)"
    )]
    NeedsCredentials { proxy: String, schemes: String, status: String },
    #[error("the proxy {proxy} refused the credentials of {user:?} ({status})")]
    WrongCredentials { proxy: String, user: String, status: String },
    #[error("the proxy {proxy} asks for {schemes}, which this agent cannot answer (it speaks Basic)")]
    UnsupportedScheme { proxy: String, schemes: String },
    #[error("the proxy {proxy} does not allow a tunnel to {target} ({status} {reason})")]
    Forbidden { proxy: String, target: String, status: u16, reason: String },
    #[error("the proxy {proxy} could not open a tunnel to {target}: {status} {reason}")]
    Refused { proxy: String, target: String, status: u16, reason: String },
    #[error("the proxy {proxy} did not answer the tunnel request within {0:?}", TUNNEL_TIMEOUT)]
    Timeout { proxy: String },
    #[error("the proxy {proxy} sent an answer that is not HTTP: {detail}")]
    BadAnswer { proxy: String, detail: String },
}

/// What the agent answers a proxy's authentication challenge with.
#[derive(Clone)]
pub enum Credentials {
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f.debug_struct("Basic").field("user", user).finish_non_exhaustive(),
        }
    }
}

impl Credentials {
    fn user(&self) -> &str {
        match self {
            Credentials::Basic { user, .. } => user,
        }
    }

    /// The `Proxy-Authorization` value for round `round` (0 first), given the schemes the proxy
    /// offered; `None` when this scheme has nothing more to say (the proxy refused it).
    fn answer(&self, round: usize, offered: &[String]) -> Option<String> {
        match self {
            Credentials::Basic { user, password } => {
                let accepts = offered.is_empty() || offered.iter().any(|s| s.eq_ignore_ascii_case("basic"));
                (round == 0 && accepts).then(|| {
                    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                    format!("Basic {token}")
                })
            }
        }
    }
}

/// One proxy, and who is reached without it.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `host:port`.
    address: String,
    credentials: Option<Credentials>,
    no_proxy: Vec<String>,
}

/// What the command line gave, before the environment is consulted.
#[derive(Debug, Default, Clone)]
pub struct ProxySettings {
    pub proxy: Option<String>,
    pub credentials_file: Option<std::path::PathBuf>,
    pub no_proxy: Option<String>,
}

impl Proxy {
    /// The proxy these settings and the environment name, if any.
    pub fn from_settings(settings: &ProxySettings) -> Result<Option<Proxy>, ProxyError> {
        let env = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()));
        let Some(raw) = settings.proxy.clone().or_else(|| env(&["HTTPS_PROXY", "https_proxy"])) else {
            return Ok(None);
        };
        let no_proxy = settings.no_proxy.clone().or_else(|| env(&["NO_PROXY", "no_proxy"])).unwrap_or_default();
        // `host:port` alone, as HTTPS_PROXY often holds, means an http:// proxy.
        let spelled = if raw.contains("://") { raw.trim().to_owned() } else { format!("http://{}", raw.trim()) };
        let url = url::Url::parse(&spelled).map_err(|_| ProxyError::BadUrl(raw.clone()))?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(ProxyError::BadUrl(raw));
        };
        if url.scheme() != "http" {
            return Err(ProxyError::BadUrl(raw));
        }
        let credentials = match &settings.credentials_file {
            Some(path) => Some(read_credentials(path)?),
            None => match (env(&["SIGHTLINE_PROXY_USER"]), env(&["SIGHTLINE_PROXY_PASSWORD"])) {
                (Some(user), Some(password)) => Some(Credentials::Basic { user, password }),
                _ if !url.username().is_empty() => Some(Credentials::Basic {
                    user: percent_decode(url.username()),
                    password: percent_decode(url.password().unwrap_or_default()),
                }),
                _ => None,
            },
        };
        Ok(Some(Proxy {
            address: format!("{host}:{port}"),
            credentials,
            no_proxy: no_proxy.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect(),
        }))
    }

    /// Whether `host` is reached through this proxy (`NO_PROXY`: `*`, exact names and addresses,
    /// and domain suffixes written `example.com` or `.example.com`).
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        !self.no_proxy.iter().any(|entry| {
            let entry = entry.trim_start_matches('.');
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        })
    }

    /// The proxy's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A TCP stream to `host:port` through the proxy: the tunnel is open when this returns.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        tokio::time::timeout(TUNNEL_TIMEOUT, self.open(host, port))
            .await
            .map_err(|_| ProxyError::Timeout { proxy: self.address.clone() })?
    }

    async fn open(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let proxy = self.address.clone();
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let unreachable = |e: std::io::Error| ProxyError::Unreachable { proxy: proxy.clone(), detail: e.to_string() };
        let mut stream = TcpStream::connect(&self.address).await.map_err(unreachable)?;
        let mut authorization: Option<String> = None;
        for round in 0..MAX_ROUNDS {
            let mut request =
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Connection: Keep-Alive\r\n");
            if let Some(value) = &authorization {
                request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).await.map_err(unreachable)?;
            let answer = read_answer(&mut stream, &proxy).await?;
            match answer.status {
                200..=299 => return Ok(stream),
                // 407 is the standard challenge; some proxies (tinyproxy) answer a CONNECT with 401.
                401 | 407 => {
                    let schemes = answer.schemes.join(", ");
                    let status = format!("{} {}", answer.status, answer.reason);
                    let Some(credentials) = &self.credentials else {
                        return Err(ProxyError::NeedsCredentials { proxy, schemes, status });
                    };
                    match credentials.answer(round, &answer.schemes) {
                        Some(value) => authorization = Some(value),
                        None if authorization.is_some() => {
                            let user = credentials.user().to_owned();
                            return Err(ProxyError::WrongCredentials { proxy, user, status });
                        }
                        None => return Err(ProxyError::UnsupportedScheme { proxy, schemes }),
                    }
                    if answer.closes {
                        // The proxy closed after its challenge: the next round needs a new connection.
                        stream = TcpStream::connect(&self.address).await.map_err(unreachable)?;
                    }
                }
                403 => return Err(ProxyError::Forbidden { proxy, target, status: 403, reason: answer.reason }),
                status => return Err(ProxyError::Refused { proxy, target, status, reason: answer.reason }),
            }
        }
        Err(ProxyError::WrongCredentials {
            proxy,
            user: self.credentials.as_ref().map(|c| c.user().to_owned()).unwrap_or_default(),
            status: format!("still refused after {MAX_ROUNDS} rounds"),
        })
    }
}

/// `%XX` escapes of a URL's user info.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_credentials(path: &std::path::Path) -> Result<Credentials, ProxyError> {
    let fail = |detail: String| ProxyError::Credentials { path: path.display().to_string(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let line = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    let (user, password) = line.split_once(':').ok_or_else(|| fail("expected one line, user:password".into()))?;
    if user.is_empty() {
        return Err(fail("the user name is empty".into()));
    }
    Ok(Credentials::Basic { user: user.to_owned(), password: password.to_owned() })
}

/// The head of a proxy's answer to `CONNECT`.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: String,
    /// The schemes of its `Proxy-Authenticate` headers (or `WWW-Authenticate`, with a 401).
    schemes: Vec<String>,
    /// It closes the connection after this answer.
    closes: bool,
}

/// Reads the answer head and skips its body (a 407 page), leaving the stream at the tunnel's
/// first byte on success.
async fn read_answer(stream: &mut TcpStream, proxy: &str) -> Result<Answer, ProxyError> {
    let bad = |detail: String| ProxyError::BadAnswer { proxy: proxy.to_owned(), detail };
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line: nothing of the tunnel may be read into a buffer here.
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_HEAD {
            return Err(bad(format!("an answer head over {MAX_HEAD} bytes")));
        }
        let n = stream.read(&mut byte).await.map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Err(bad("the connection closed before the answer ended".into()));
        }
        buf.push(byte[0]);
    }
    let answer = parse_answer(&buf).map_err(bad)?;
    if !(200..300).contains(&answer.status) {
        let length = content_length(&buf).unwrap_or(0).min(MAX_HEAD);
        let mut body = vec![0u8; length];
        let _ = stream.read_exact(&mut body).await;
    }
    Ok(answer)
}

fn parse_answer(head: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("an incomplete answer head".into()),
        Err(e) => return Err(e.to_string()),
    }
    let header = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let schemes = header("proxy-authenticate")
        .chain(header("www-authenticate"))
        .filter_map(|v| v.split_whitespace().next().map(str::to_owned))
        .collect();
    let status = response.code.unwrap_or(0);
    // A refusal whose body has no length cannot be skipped: the next round needs a new connection.
    let unmeasured = !(200..300).contains(&status) && header("content-length").next().is_none();
    let closes = header("connection").chain(header("proxy-connection")).any(|v| v.eq_ignore_ascii_case("close"))
        || response.version == Some(0)
        || unmeasured;
    Ok(Answer { status, reason: response.reason.unwrap_or_default().to_owned(), schemes, closes })
}

fn content_length(head: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(head).ok()?;
    response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(no_proxy: &str) -> Proxy {
        Proxy {
            address: "198.18.0.1:3128".into(),
            credentials: None,
            no_proxy: no_proxy.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect(),
        }
    }

    #[test]
    fn a_proxy_is_an_http_url_or_a_host_and_port() {
        let given = |proxy: &str| {
            let settings =
                ProxySettings { proxy: Some(proxy.into()), credentials_file: None, no_proxy: Some(String::new()) };
            Proxy::from_settings(&settings)
        };
        assert_eq!(given("http://proxy.corp.example:3128").unwrap().unwrap().address, "proxy.corp.example:3128");
        assert_eq!(given("proxy.corp.example:8080").unwrap().unwrap().address, "proxy.corp.example:8080");
        assert_eq!(given("http://[2001:db8::1]:3128").unwrap().unwrap().address, "[2001:db8::1]:3128");
        assert!(matches!(given("https://proxy.corp.example:443"), Err(ProxyError::BadUrl(_))));
        assert!(matches!(given("socks5://proxy:1080"), Err(ProxyError::BadUrl(_))));
    }

    #[test]
    fn no_proxy_names_hosts_domains_and_everything() {
        let p = proxy("localhost, .corp.example,10.1.2.3");
        assert!(!p.applies_to("localhost"));
        assert!(!p.applies_to("relay.corp.example"));
        assert!(!p.applies_to("CORP.example"));
        assert!(!p.applies_to("10.1.2.3"));
        assert!(p.applies_to("relay.example.com"));
        assert!(p.applies_to("notcorp.example"));
        assert!(!proxy("*").applies_to("anything"));
        assert!(proxy("").applies_to("anything"));
    }

    #[test]
    fn an_answer_head_says_status_schemes_and_whether_it_closes() {
        let a = parse_answer(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nProxy-Authenticate: NTLM\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.reason.as_str()), (407, "Proxy Authentication Required"));
        assert_eq!(a.schemes, ["Basic", "NTLM"]);
        assert!(a.closes);
        let ok = parse_answer(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
        assert_eq!(ok.status, 200);
        assert!(!ok.closes);
        let measured =
            parse_answer(b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert!(!measured.closes, "a refusal with a known length keeps the connection for the next round");
        let chunked = parse_answer(b"HTTP/1.1 407 Auth\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(chunked.closes, "a refusal of unknown length does not");
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn basic_answers_once_and_only_a_basic_challenge() {
        let c = Credentials::Basic { user: "teller".into(), password: "p:w".into() };
        assert_eq!(c.answer(0, &["Basic".into()]).unwrap(), "Basic dGVsbGVyOnA6dw==");
        assert_eq!(c.answer(1, &["Basic".into()]), None, "a second 407 means the password was refused");
        assert_eq!(c.answer(0, &["Negotiate".into()]), None);
        assert!(!format!("{c:?}").contains("p:w"), "the password never reaches a log");
    }

    #[test]
    fn credentials_come_from_a_file_of_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy");
        std::fs::write(&path, "teller:s3cr:et\n").unwrap();
        let Credentials::Basic { user, password } = read_credentials(&path).unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("teller", "s3cr:et"));
        std::fs::write(&path, "no colon\n").unwrap();
        assert!(read_credentials(&path).unwrap_err().to_string().contains("user:password"));
        assert_eq!(percent_decode("a%40b%3Ac"), "a@b:c");
    }
}

/// Media's ICE-TCP connections through the proxy, in the same tunnels as signaling (R1): an
/// endpoint whose only way out is the proxy still sends its screen.
#[derive(Debug)]
pub struct ProxyDialer(pub Proxy);

#[async_trait::async_trait]
impl sightline_peer::TcpDialer for ProxyDialer {
    async fn dial(&self, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
        let tunnel = self.0.tunnel(&addr.ip().to_string(), addr.port()).await;
        tunnel.map_err(|e| {
            tracing::warn!(error = %e, "media cannot reach the relay through the proxy");
            std::io::Error::other(e.to_string())
        })
    }
}
