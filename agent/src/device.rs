//! The agent's device identity (R18): an Ed25519 key pair created at enrolment, kept in the data
//! directory (private key file mode 0600), and used to sign each connection's challenge.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

const KEY_FILE: &str = "device.key";
const INFO_FILE: &str = "device.json";

/// What enrolment recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    pub segment: String,
}

/// An enrolled device: its id and signing key.
pub struct Device {
    pub info: DeviceInfo,
    key: SigningKey,
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
    /// Saves an enrolled identity: the key file first (0600), then the info.
    pub fn save(dir: &Path, key: SigningKey, info: DeviceInfo) -> anyhow::Result<Device> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        write_private(&dir.join(KEY_FILE), hex::encode(key.to_bytes()).as_bytes())?;
        write_private(&dir.join(INFO_FILE), serde_json::to_string_pretty(&info)?.as_bytes())?;
        Ok(Device { info, key })
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
        Ok(Device { info, key: SigningKey::from_bytes(&seed) })
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
        let saved = Device::save(dir.path(), key, info).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Device::load(dir.path()).unwrap();
        assert_eq!(loaded.info.device_id, "d1");
        assert_eq!(hex::encode(loaded.key.verifying_key().as_bytes()), public);
        assert_eq!(saved.sign_challenge(b"abc"), loaded.sign_challenge(b"abc"));
    }

    #[test]
    fn refuses_a_key_others_can_read_and_a_missing_enrolment() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Device::load(dir.path()).unwrap_err().to_string().contains("not enrolled"));
        let (key, _) = new_key().unwrap();
        Device::save(dir.path(), key, DeviceInfo { device_id: "d".into(), name: "n".into(), segment: "s".into() })
            .unwrap();
        std::fs::set_permissions(dir.path().join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Device::load(dir.path()).unwrap_err().to_string().contains("0600"));
    }
}
