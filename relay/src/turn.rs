//! TURN for viewers whose UDP is blocked (R42): the relay does not relay media through TURN
//! itself; it hands each viewer short-lived credentials for the TURN servers it is configured
//! with (coturn with `use-auth-secret`, see docs/network.md), computed with the secret it shares
//! with them.

use std::time::Duration;

use anyhow::{Context, bail};
use sightline_core::turn::{MAX_TTL, TurnSecret};
use sightline_proto::{IceServer, RelayToViewer};

/// The TURN servers and what their credentials are made of.
#[derive(Debug, Clone)]
pub struct Turn {
    urls: Vec<String>,
    secret: TurnSecret,
    ttl: Duration,
}

impl Turn {
    /// From the configuration: none without URLs; URLs without a readable, strong secret, or a
    /// lifetime over five minutes, refuse to start.
    pub fn from_config(
        urls: &[String],
        secret_file: Option<&std::path::Path>,
        ttl_s: u64,
    ) -> anyhow::Result<Option<Turn>> {
        if urls.is_empty() {
            if secret_file.is_some() {
                bail!("--turn-secret-file is set but no --turn-url: nothing would use it");
            }
            return Ok(None);
        }
        for url in urls {
            let scheme_ok = url.starts_with("turn:") || url.starts_with("turns:");
            if !scheme_ok || url.contains(char::is_whitespace) {
                bail!("TURN URL {url:?} is not turn:HOST:PORT?transport=udp|tcp or turns:HOST:PORT?transport=tcp");
            }
        }
        let path =
            secret_file.context("--turn-url needs --turn-secret-file (the secret shared with the TURN server)")?;
        let raw =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the TURN secret {}", path.display()))?;
        let secret =
            TurnSecret::new(raw.trim().as_bytes()).with_context(|| format!("TURN secret {}", path.display()))?;
        let ttl = Duration::from_secs(ttl_s);
        if ttl > MAX_TTL || ttl < Duration::from_secs(30) {
            bail!("--turn-ttl-s must be between 30 and {} (it is {ttl_s})", MAX_TTL.as_secs());
        }
        Ok(Some(Turn { urls: urls.to_vec(), secret, ttl }))
    }

    /// How often a viewer gets new credentials: halfway through their life.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 2
    }

    /// The message giving `holder` (one viewer connection) its servers and credentials now.
    pub fn servers_for(&self, holder: &str, now_ms: u64) -> anyhow::Result<RelayToViewer> {
        let issued = self.secret.issue(holder, now_ms, self.ttl)?;
        Ok(RelayToViewer::IceServers {
            servers: vec![IceServer {
                urls: self.urls.clone(),
                username: issued.username,
                credential: issued.credential,
            }],
            expires_ms: issued.expires_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(dir: &std::path::Path, secret: &str) -> std::path::PathBuf {
        let path = dir.join("turn-secret");
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        path
    }

    #[test]
    fn each_viewer_gets_its_own_credential_for_the_configured_servers() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "a shared secret that is long enough!!";
        let urls =
            vec!["turn:turn.example:3478?transport=tcp".to_owned(), "turns:turn.example:443?transport=tcp".to_owned()];
        let turn = Turn::from_config(&urls, Some(&secret_file(dir.path(), secret)), 300).unwrap().unwrap();
        let RelayToViewer::IceServers { servers, expires_ms } = turn.servers_for("op-1.7", 1_700_000_000_000).unwrap()
        else {
            panic!("not ICE servers")
        };
        assert_eq!(expires_ms, 1_700_000_300_000);
        assert_eq!(servers[0].urls, urls);
        assert_eq!(servers[0].username, "1700000300:op-1.7");
        assert_eq!(servers[0].credential, TurnSecret::new(secret.as_bytes()).unwrap().password("1700000300:op-1.7"));
        assert_eq!(turn.renew_every(), Duration::from_secs(150));
    }

    #[test]
    fn a_configuration_that_would_hand_out_nothing_usable_refuses_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = secret_file(dir.path(), "a shared secret that is long enough!!");
        let url = vec!["turn:turn.example:3478".to_owned()];
        assert!(Turn::from_config(&[], None, 300).unwrap().is_none());
        assert!(Turn::from_config(&[], Some(&good), 300).is_err(), "a secret nothing uses");
        assert!(Turn::from_config(&url, None, 300).is_err(), "URLs without a secret");
        assert!(Turn::from_config(&url, Some(&good), 301).is_err(), "over five minutes");
        assert!(Turn::from_config(&["stun:x:3478".to_owned()], Some(&good), 300).is_err(), "not TURN");
        let weak = secret_file(dir.path(), "short");
        assert!(Turn::from_config(&url, Some(&weak), 300).is_err(), "a weak secret");
    }
}
