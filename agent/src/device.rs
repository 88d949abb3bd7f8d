//! The agent's device identity (R18): an Ed25519 key pair created at enrolment, kept in the data
//! directory (private key file mode 0600), and used to sign each connection's challenge; and the
//! relay node keys it trusts (`relay-keys`), pinned at enrolment and extended only by an
//! endorsement from a key already pinned (`sightline_core::relay_proof`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

const KEY_FILE: &str = "device.key";
const INFO_FILE: &str = "device.json";
const PINS_FILE: &str = "relay-keys";

/// What enrolment recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    pub segment: String,
}

/// An enrolled device: its id, signing key, and the relay node keys it trusts.
pub struct Device {
    pub info: DeviceInfo,
    key: SigningKey,
    pins: RelayPins,
}

/// The relay node keys this agent trusts, one verifier key per line. Only grows: a key that was
/// replaced stays pinned until someone removes it from the file.
#[derive(Debug)]
pub struct RelayPins {
    path: PathBuf,
    keys: std::sync::Mutex<Vec<String>>,
}

impl RelayPins {
    pub fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Pins `added` too (keys a pinned key endorsed), on disk before they are used.
    pub fn add(&self, added: &[String]) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = keys.clone();
        next.extend(added.iter().filter(|k| !keys.contains(k)).cloned());
        write_private(&self.path, next.join("\n").as_bytes())?;
        *keys = next;
        Ok(())
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Where state lives unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".local/share/sightline-agent"),
        None => PathBuf::from("sightline-agent"),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Creates a new key pair (not yet saved). Returns the key and its public half in hex.
pub fn new_key() -> anyhow::Result<(SigningKey, String)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("operating system RNG failed: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let public = hex::encode(key.verifying_key().as_bytes());
    Ok((key, public))
}

impl Device {
    /// Saves an enrolled identity: the relay's key, the key file (0600), then the info.
    pub fn save(dir: &Path, key: SigningKey, info: DeviceInfo, relay_key: &str) -> anyhow::Result<Device> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        write_private(&dir.join(PINS_FILE), relay_key.trim().as_bytes())?;
        write_private(&dir.join(KEY_FILE), hex::encode(key.to_bytes()).as_bytes())?;
        write_private(&dir.join(INFO_FILE), serde_json::to_string_pretty(&info)?.as_bytes())?;
        let pins =
            RelayPins { path: dir.join(PINS_FILE), keys: std::sync::Mutex::new(vec![relay_key.trim().to_owned()]) };
        Ok(Device { info, key, pins })
    }

    /// Loads the identity; refuses a key file others can read.
    pub fn load(dir: &Path) -> anyhow::Result<Device> {
        let key_path = dir.join(KEY_FILE);
        let meta = std::fs::metadata(&key_path).with_context(|| {
            format!(
                "this agent is not enrolled ({} missing): run `agent enroll --relay-url URL --token TOKEN` first",
                key_path.display()
            )
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); it must be 0600",
                key_path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let seed: [u8; 32] = hex::decode(std::fs::read_to_string(&key_path)?.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{} is corrupt", key_path.display()))?;
        let info: DeviceInfo = serde_json::from_str(&std::fs::read_to_string(dir.join(INFO_FILE))?)
            .with_context(|| format!("{} is corrupt", dir.join(INFO_FILE).display()))?;
        let pins_path = dir.join(PINS_FILE);
        let pinned = std::fs::read_to_string(&pins_path).with_context(|| {
            format!(
                "{} is missing: this agent enrolled before agents pinned their relay's key, so it cannot tell its \
                 relay from another; enrol it again (`agent enroll`)",
                pins_path.display()
            )
        })?;
        let keys: Vec<String> = pinned.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        if keys.is_empty() {
            bail!("{} names no relay key: enrol this agent again", pins_path.display());
        }
        let pins = RelayPins { path: pins_path, keys: std::sync::Mutex::new(keys) };
        Ok(Device { info, key: SigningKey::from_bytes(&seed), pins })
    }

    /// The relay node keys this agent trusts.
    pub fn relay_pins(&self) -> &RelayPins {
        &self.pins
    }

    /// Signs a maintenance-window request over the relay's challenge.
    pub fn sign_window(&self, challenge: &[u8], start_ms: u64, end_ms: u64) -> String {
        let message = sightline_proto::agent_auth::window_message(challenge, &self.info.device_id, start_ms, end_ms);
        hex::encode(self.key.sign(&message).to_bytes())
    }

    /// Signs the closing of this device's maintenance windows (R3).
    pub fn sign_close_window(&self, challenge: &[u8]) -> String {
        let message = sightline_proto::agent_auth::close_window_message(challenge, &self.info.device_id);
        hex::encode(self.key.sign(&message).to_bytes())
    }

    /// Signs a help request (R2) on the connection with `challenge`.
    pub fn sign_help(&self, challenge: &[u8]) -> String {
        let message = sightline_proto::agent_auth::help_message(challenge, &self.info.device_id);
        hex::encode(self.key.sign(&message).to_bytes())
    }

    /// Fills in the device id and signs a consent receipt (R2): the relay keeps it as evidence
    /// of what the user decided.
    pub fn sign_receipt(&self, mut receipt: sightline_proto::ConsentReceipt) -> sightline_proto::ConsentReceipt {
        receipt.device_id = self.info.device_id.clone();
        let message = sightline_proto::agent_auth::consent_message(&receipt);
        receipt.signature = hex::encode(self.key.sign(&message).to_bytes());
        receipt
    }

    /// Signs a media seal's message (`agent_auth::media_seal_message`): the chain over the
    /// frames this endpoint sent, which a recording is checked against.
    pub fn sign_media_seal(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// Signs the relay's challenge for this connection.
    pub fn sign_challenge(&self, challenge: &[u8]) -> String {
        let message = sightline_proto::agent_auth::signed_message(challenge, &self.info.device_id);
        hex::encode(self.key.sign(&message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_with_private_modes_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = new_key().unwrap();
        let info = DeviceInfo { device_id: "d1".into(), name: "pc".into(), segment: "office".into() };
        let saved = Device::save(dir.path(), key, info, "relay+00+key").unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Device::load(dir.path()).unwrap();
        assert_eq!(loaded.info.device_id, "d1");
        assert_eq!(hex::encode(loaded.key.verifying_key().as_bytes()), public);
        assert_eq!(saved.sign_challenge(b"abc"), loaded.sign_challenge(b"abc"));
        assert_eq!(loaded.relay_pins().keys(), vec!["relay+00+key".to_owned()]);
        loaded.relay_pins().add(&["relay+01+next".into()]).unwrap();
        let mode = std::fs::metadata(dir.path().join(PINS_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Device::load(dir.path()).unwrap().relay_pins().keys(), ["relay+00+key", "relay+01+next"]);
    }

    #[test]
    fn an_agent_without_a_pinned_relay_key_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = new_key().unwrap();
        let info = DeviceInfo { device_id: "d".into(), name: "n".into(), segment: "s".into() };
        Device::save(dir.path(), key, info, "relay+00+key").unwrap();
        std::fs::remove_file(dir.path().join(PINS_FILE)).unwrap();
        assert!(Device::load(dir.path()).unwrap_err().to_string().contains("enrol it again"));
    }

    #[test]
    fn refuses_a_key_others_can_read_and_a_missing_enrolment() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Device::load(dir.path()).unwrap_err().to_string().contains("not enrolled"));
        let (key, _) = new_key().unwrap();
        let info = DeviceInfo { device_id: "d".into(), name: "n".into(), segment: "s".into() };
        Device::save(dir.path(), key, info, "relay+00+key").unwrap();
        std::fs::set_permissions(dir.path().join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Device::load(dir.path()).unwrap_err().to_string().contains("0600"));
    }
}
