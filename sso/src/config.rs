//! The SSO file (`relay --sso-config FILE`): the providers, how their groups become roles, and
//! whether local invited accounts may still sign in.
//!
//! Every key is checked when the relay starts: an unknown key, an unknown role, a provider that
//! would grant `admin` without saying so, an issuer over plain HTTP beyond loopback, or a secret
//! file that cannot be read stops the relay. Nothing in the file is silently ignored.
//!
//! ```toml
//! local_accounts = "allow"        # or "forbid": only directory identities sign in
//! recheck_s = 300                 # groups are re-read from each provider this often (60..=900)
//!
//! [[provider]]
//! name = "corp"                   # in URLs and records: /api/sso/corp/start
//! label = "Bank staff"            # on the sign-in button
//! issuer = "https://login.bank.example/realms/staff"
//! client_id = "sightline"
//! client_secret_file = "/etc/sightline/oidc-corp.secret"
//! groups_claim = "groups"         # the claim (ID token or userinfo) that lists the groups
//! scopes = ["profile", "groups"]  # asked for besides "openid"
//! max_age_s = 3600                # an IdP sign-in older than this is not a fresh login
//! admin_from_directory = false    # true: a group may grant `admin` (separation of duties)
//! [provider.roles]               # seeds the table in force; then only two admins change it
//! "sightline-operators" = ["operator"]
//! "sightline-auditors" = ["auditor"]
//! [provider.segments]            # optional: without it, groups do not narrow the segments
//! "branch-a-staff" = ["branch-a"] # people reach only the policy segments their groups name here
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sightline_core::roles::Role;

use sightline_core::role_mapping::RoleMapping;

/// Groups are re-read at most this often and at least this often (seconds).
pub const RECHECK_RANGE_S: std::ops::RangeInclusive<u64> = 60..=900;
/// The freshest and stalest IdP sign-in a provider may demand (seconds).
pub const MAX_AGE_RANGE_S: std::ops::RangeInclusive<u64> = 60..=24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("provider {provider:?}: {problem}")]
    Provider { provider: String, problem: String },
    #[error("{0}")]
    Invalid(String),
}

/// Whether local (invited) accounts sign in beside directory ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LocalAccounts {
    #[default]
    Allow,
    Forbid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    local_accounts: LocalAccounts,
    #[serde(default = "default_recheck")]
    recheck_s: u64,
    #[serde(default)]
    provider: Vec<ProviderShape>,
}

fn default_recheck() -> u64 {
    300
}

fn default_max_age() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderShape {
    name: String,
    label: Option<String>,
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    groups_claim: String,
    /// Scopes asked for besides `openid` (what makes the provider release the groups claim).
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_max_age")]
    max_age_s: u64,
    #[serde(default)]
    admin_from_directory: bool,
    /// PEM file of CA certificates the provider's TLS chain ends in (an internal CA).
    ca_file: Option<PathBuf>,
    #[serde(default)]
    roles: BTreeMap<String, Vec<Role>>,
    /// Groups to the policy's segments their people may reach; absent: groups do not narrow them.
    segments: Option<BTreeMap<String, Vec<String>>>,
}

/// One configured identity provider, validated.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub label: String,
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: String,
    pub groups_claim: String,
    pub scopes: Vec<String>,
    pub max_age_s: u64,
    pub ca_pem: Option<Vec<u8>>,
    pub mapping: RoleMapping,
}

/// The whole SSO configuration, validated.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    pub local_accounts: LocalAccounts,
    pub recheck_s: u64,
    pub providers: Vec<ProviderConfig>,
}

impl SsoConfig {
    /// Reads and validates the file; secret and CA files are read relative to nothing (absolute
    /// or relative to the working directory, as given).
    pub fn load(path: &Path) -> Result<SsoConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
        let shape: FileShape =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), error: e.to_string() })?;
        Self::from_shape(shape, &|p: &Path| std::fs::read(p))
    }

    /// Validates `text` with `read` for the files it names (tests pass their own).
    pub fn parse(text: &str, read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>) -> Result<SsoConfig, ConfigError> {
        let shape: FileShape =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: "(text)".into(), error: e.to_string() })?;
        Self::from_shape(shape, read)
    }

    fn from_shape(
        shape: FileShape,
        read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<SsoConfig, ConfigError> {
        if !RECHECK_RANGE_S.contains(&shape.recheck_s) {
            return Err(ConfigError::Invalid(format!(
                "recheck_s = {} is outside {}..={} seconds",
                shape.recheck_s,
                RECHECK_RANGE_S.start(),
                RECHECK_RANGE_S.end()
            )));
        }
        if shape.provider.is_empty() {
            return Err(ConfigError::Invalid("no [[provider]]: an SSO file names at least one".into()));
        }
        let mut providers: Vec<ProviderConfig> = Vec::new();
        for p in shape.provider {
            let name = p.name.clone();
            let problem = |problem: String| ConfigError::Provider { provider: name.clone(), problem };
            if p.name.is_empty()
                || p.name.len() > 32
                || !p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(problem("names are 1-32 lower-case letters, digits or '-'".into()));
            }
            if providers.iter().any(|q| q.name == p.name) {
                return Err(problem("named twice".into()));
            }
            let issuer: url::Url = p.issuer.parse().map_err(|e| problem(format!("issuer {:?}: {e}", p.issuer)))?;
            let loopback = matches!(issuer.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
                return Err(problem(format!("issuer {issuer} must be https (http only on loopback)")));
            }
            if !MAX_AGE_RANGE_S.contains(&p.max_age_s) {
                return Err(problem(format!(
                    "max_age_s = {} is outside {}..={}",
                    p.max_age_s,
                    MAX_AGE_RANGE_S.start(),
                    MAX_AGE_RANGE_S.end()
                )));
            }
            if p.groups_claim.trim().is_empty() {
                return Err(problem("groups_claim is empty".into()));
            }
            let secret = read(&p.client_secret_file)
                .map_err(|e| problem(format!("client_secret_file {}: {e}", p.client_secret_file.display())))?;
            let client_secret = String::from_utf8(secret)
                .map_err(|_| problem("the client secret is not UTF-8".into()))?
                .trim()
                .to_owned();
            if client_secret.is_empty() {
                return Err(problem("the client secret file is empty".into()));
            }
            let ca_pem = match &p.ca_file {
                Some(path) => Some(read(path).map_err(|e| problem(format!("ca_file {}: {e}", path.display())))?),
                None => None,
            };
            // Segment names are checked against the policy when the relay settles the table.
            let mapping = RoleMapping::new(p.roles, p.admin_from_directory)
                .and_then(|m| m.with_segments(p.segments))
                .map_err(|e| problem(e.to_string()))?;
            providers.push(ProviderConfig {
                label: p.label.unwrap_or_else(|| p.name.clone()),
                name: p.name,
                issuer,
                client_id: p.client_id,
                client_secret,
                groups_claim: p.groups_claim,
                scopes: p.scopes,
                max_age_s: p.max_age_s,
                ca_pem,
                mapping,
            });
        }
        Ok(SsoConfig { local_accounts: shape.local_accounts, recheck_s: shape.recheck_s, providers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(_: &Path) -> std::io::Result<Vec<u8>> {
        Ok(b"a-client-secret\n".to_vec())
    }

    const GOOD: &str = r#"
        [[provider]]
        name = "corp"
        issuer = "https://login.bank.example/realms/staff"
        client_id = "sightline"
        client_secret_file = "/secret"
        groups_claim = "groups"
        [provider.roles]
        "ops" = ["operator"]
    "#;

    #[test]
    fn a_valid_file_loads_with_its_defaults() {
        let config = SsoConfig::parse(GOOD, &secret).unwrap();
        assert_eq!(config.local_accounts, LocalAccounts::Allow);
        assert_eq!(config.recheck_s, 300);
        let p = &config.providers[0];
        assert_eq!((p.label.as_str(), p.client_secret.as_str(), p.max_age_s), ("corp", "a-client-secret", 3600));
    }

    /// A key nothing reads, a role that does not exist, plain HTTP to a remote issuer, admin from
    /// the directory without saying so: each stops the relay, by name (R12).
    #[test]
    fn what_nothing_would_enforce_is_refused_by_name() {
        let cases = [
            (GOOD.replace("groups_claim", "segment = [\"x\"]\n        groups_claim"), "unknown field `segment`"),
            (format!("{GOOD}\n[provider.segments]\n\"ops\" = []"), "reaches no segment"),
            (GOOD.replace("\"operator\"", "\"superuser\""), "unknown variant `superuser`"),
            (GOOD.replace("https://login.bank", "http://login.bank"), "must be https"),
            (GOOD.replace("\"operator\"", "\"admin\""), "admin_from_directory"),
            (GOOD.replace("name = \"corp\"", "name = \"Corp Login\""), "lower-case"),
            (format!("recheck_s = 5\n{GOOD}"), "recheck_s = 5"),
            (format!("local_accounts = \"maybe\"\n{GOOD}"), "unknown variant `maybe`"),
            (format!("{GOOD}\n{GOOD}"), "named twice"),
        ];
        for (text, expected) in cases {
            let e = SsoConfig::parse(&text, &secret).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected:?} not in {e:?}");
        }
        // Controls: loopback may be http, and admin may come from the directory when said.
        let loopback = GOOD.replace("https://login.bank.example", "http://127.0.0.1:9000");
        assert!(SsoConfig::parse(&loopback, &secret).is_ok());
        let admin = GOOD
            .replace("\"operator\"", "\"admin\"")
            .replace("groups_claim", "admin_from_directory = true\ngroups_claim");
        assert!(SsoConfig::parse(&admin, &secret).is_ok());
    }

    #[test]
    fn an_unreadable_or_empty_secret_stops_the_relay() {
        let missing = |_: &Path| Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        assert!(SsoConfig::parse(GOOD, &missing).unwrap_err().to_string().contains("client_secret_file"));
        let empty = |_: &Path| Ok(b"  \n".to_vec());
        assert!(SsoConfig::parse(GOOD, &empty).unwrap_err().to_string().contains("empty"));
    }
}
