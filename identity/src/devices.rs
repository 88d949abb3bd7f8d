//! Agent devices (R18): enrolment with a one-time token, proof of key possession on every
//! connection, revocation.
//!
//! An admin (dashboard, or `relay agent-token create --segment S` on the host) makes a one-time
//! agent token for a segment; `agent enroll` creates an Ed25519 key pair and sends the public key
//! with the token over the agent socket, and gets its device id back. On every connection the
//! relay sends a fresh 32-byte challenge and the agent signs `context || challenge || device id`
//! (`agent_auth::signed_message`); each other one-shot call (help, opening or closing a window)
//! signs a message of its own purpose, so no signature can pass for another. Unknown, revoked
//! and forged devices are refused and logged (`device.auth_failed`). Revoking a device publishes
//! a revocation on the store's event channel, and its socket closes on every node.
//!
//! Maintenance windows (R3) are kept per device: the person at the endpoint opens one with
//! `agent allow --for 30m` (signing the challenge together with the exact start and end), an admin
//! through `POST /api/admin/devices/{id}/maintenance-window`; at most 12 hours each. Each window
//! is an event, and so is an early close (`agent close-window`, or the admin's `.../close`): the
//! sessions that need it end when they next read it, within about a second.

use std::net::IpAddr;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{EnrolmentToken, Identity, IdentityError, Revocation, TokenPurpose, random_bytes};
use sightline_audit::events::{EventKind, Outcome, device_enrolled_detail, device_key_changed_detail};
use sightline_store::{Collection, StoreError};

/// An enrolled agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub segment: String,
    /// Ed25519 public key, hex.
    pub public_key: String,
    pub enrolled_ms: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// A period in which remote support is released for one device (R3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    /// `user@endpoint` or the admin's name.
    pub opened_by: String,
}

/// How old a device record read from the store may be to stand in for it during an outage.
pub const DEVICE_MEMORY_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest window anyone may open at once.
pub const MAX_WINDOW_MS: u64 = 12 * 60 * 60 * 1000;

impl Identity {
    /// Registers an agent's public key in exchange for a one-time agent token.
    pub async fn enrol_device(
        &self,
        token: &str,
        public_key_hex: &str,
        name: &str,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let name = super::valid_name(name)?;
        let key: [u8; 32] = hex::decode(public_key_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| IdentityError::BadRequest("public_key must be 32 bytes of hex (Ed25519)".into()))?;
        VerifyingKey::from_bytes(&key)
            .map_err(|_| IdentityError::BadRequest("public_key is not a valid Ed25519 key".into()))?;
        let refused = |e: IdentityError| {
            self.emit(
                EventKind::DeviceEnrolmentRefused,
                Outcome::Failure,
                &format!("device:{name}"),
                None,
                source,
                e.to_string(),
            );
            e
        };
        // Look first: a link meant for a person is not burnt by an agent presenting it.
        match self.peek_token(token).await {
            Ok(EnrolmentToken { purpose: TokenPurpose::Agent { .. } | TokenPurpose::Rekey { .. }, .. }) => {}
            Ok(_) => return Err(refused(IdentityError::BadRequest("this is not an agent enrolment token".into()))),
            Err(e) => return Err(refused(e)),
        }
        let record = self.consume_token(token).await.map_err(refused)?;
        let (segment, created_by) = match record.purpose {
            TokenPurpose::Agent { segment, created_by } => (segment, created_by),
            TokenPurpose::Rekey { device_id, created_by } => {
                let token_id = super::token_id(token);
                return self
                    .rekey_device(&device_id, public_key_hex, &token_id, &created_by, source)
                    .await
                    .map_err(refused);
            }
            _ => return Err(refused(IdentityError::BadRequest("this is not an agent enrolment token".into()))),
        };
        let device = Device {
            id: hex::encode(random_bytes::<12>()),
            name,
            segment,
            public_key: public_key_hex.to_lowercase(),
            enrolled_ms: self.now_ms(),
            revoked: false,
        };
        self.store.put(Collection::Devices, &device.id, &device).await?;
        self.emit(
            EventKind::DeviceEnrolled,
            Outcome::Success,
            &format!("device:{}", device.id),
            None,
            source,
            device_enrolled_detail(
                &device.name,
                &device.segment,
                &device.public_key,
                &super::token_id(token),
                &created_by,
            ),
        );
        Ok(device)
    }

    /// Gives enrolled device `device_id` a new key (`public_key_hex`), with the re-key token
    /// `token_id` that `created_by` made: the device keeps its id, name and segment; the change is
    /// a `device.key_changed` record naming both keys, and the old key's connections close.
    async fn rekey_device(
        &self,
        device_id: &str,
        public_key_hex: &str,
        token_id: &str,
        created_by: &str,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let new_key = public_key_hex.to_lowercase();
        let mut old_key = String::new();
        let updated = self
            .store
            .update::<Device, _>(Collection::Devices, device_id, |d| {
                let mut d = d?;
                if d.revoked {
                    return None;
                }
                old_key = std::mem::replace(&mut d.public_key, new_key.clone());
                Some(d)
            })
            .await?;
        let device =
            updated.ok_or_else(|| IdentityError::Forbidden("the device to re-key is revoked or gone".into()))?;
        self.emit(
            EventKind::DeviceKeyChanged,
            Outcome::Success,
            &format!("device:{device_id}"),
            None,
            source,
            device_key_changed_detail(&device.name, &device.segment, &new_key, &old_key, token_id, created_by),
        );
        self.audit_committed().await?;
        // The old key's link goes now, on every node; the new key connects afresh.
        self.forget_device(device_id);
        self.store.publish(&Revocation::Device { device_id: device_id.to_owned() }).await?;
        Ok(device)
    }

    /// Checks an agent's answer to this connection's challenge. Unknown and revoked devices and
    /// bad signatures are refused and logged.
    pub async fn authenticate_device(
        &self,
        device_id: &str,
        challenge: &[u8],
        signature_hex: &str,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let message = sightline_proto::agent_auth::signed_message(challenge, device_id);
        self.verify_device_signature(device_id, &message, signature_hex, source).await
    }

    /// Verifies a message the device signed during its session (consent receipts).
    pub async fn verify_device_message(
        &self,
        device_id: &str,
        message: &[u8],
        signature_hex: &str,
    ) -> Result<Device, IdentityError> {
        self.verify_device_signature(device_id, message, signature_hex, None).await
    }

    /// Verifies `signature_hex` over `message` with the enrolled key of an active device.
    async fn verify_device_signature(
        &self,
        device_id: &str,
        message: &[u8],
        signature_hex: &str,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let refuse = |why: &str| {
            self.emit(EventKind::DeviceAuthFailed, Outcome::Failure, &format!("device:{device_id}"), None, source, why);
            IdentityError::Forbidden(why.to_owned())
        };
        let Some(device) = self.device_record(device_id).await? else {
            return Err(refuse("unknown device: enrol it with a token first"));
        };
        if device.revoked {
            return Err(refuse("this device was revoked"));
        }
        let key: [u8; 32] = hex::decode(&device.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| refuse("stored key is corrupt"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| refuse("stored key is corrupt"))?;
        let signature: [u8; 64] = hex::decode(signature_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| refuse("malformed signature"))?;
        key.verify_strict(message, &Signature::from_bytes(&signature))
            .map_err(|_| refuse("signature does not match the enrolled key"))?;
        Ok(device)
    }

    /// Records a maintenance window for `device_id`, replacing windows that already ended.
    pub async fn open_window(
        &self,
        device_id: &str,
        start_ms: u64,
        end_ms: u64,
        opened_by: &str,
        source: Option<IpAddr>,
    ) -> Result<Window, IdentityError> {
        let now = self.now_ms();
        if end_ms <= start_ms || end_ms <= now || end_ms - start_ms > MAX_WINDOW_MS {
            return Err(IdentityError::BadRequest(
                "a window needs start < end, an end in the future, and at most 12 hours".into(),
            ));
        }
        let device: Device = self.store.get(Collection::Devices, device_id).await?.ok_or(IdentityError::NotFound)?;
        if device.revoked {
            return Err(IdentityError::Forbidden("this device was revoked".into()));
        }
        let window = Window { start_ms, end_ms, opened_by: opened_by.to_owned() };
        self.store
            .update::<Vec<Window>, _>(Collection::MaintenanceWindows, device_id, |w| {
                let mut windows: Vec<Window> = w.unwrap_or_default().into_iter().filter(|w| w.end_ms > now).collect();
                windows.push(window.clone());
                Some(windows)
            })
            .await?;
        let detail = format!("maintenance window {start_ms}..{end_ms} (Unix ms) for {}", device.name);
        self.emit(
            EventKind::MaintenanceWindowOpened,
            Outcome::Success,
            opened_by,
            Some(&format!("device:{device_id}")),
            source,
            detail,
        );
        Ok(window)
    }

    /// Closes the windows open for `device_id` now (windows that start later stay); running
    /// sessions that need one end when they next read it. Whether one was open.
    pub async fn close_windows(
        &self,
        device_id: &str,
        closed_by: &str,
        source: Option<IpAddr>,
    ) -> Result<bool, IdentityError> {
        let now = self.now_ms();
        let device: Device = self.store.get(Collection::Devices, device_id).await?.ok_or(IdentityError::NotFound)?;
        let mut closed = false;
        self.store
            .update::<Vec<Window>, _>(Collection::MaintenanceWindows, device_id, |w| {
                let mut windows: Vec<Window> = w.unwrap_or_default();
                for w in windows.iter_mut().filter(|w| w.start_ms <= now && now < w.end_ms) {
                    w.end_ms = now;
                    closed = true;
                }
                Some(windows.into_iter().filter(|w| w.end_ms > now).collect())
            })
            .await?;
        if closed {
            self.emit(
                EventKind::MaintenanceWindowClosed,
                Outcome::Success,
                closed_by,
                Some(&format!("device:{device_id}")),
                source,
                format!("maintenance window of {} closed early", device.name),
            );
        }
        Ok(closed)
    }

    /// When the maintenance window open for `device_id` at `at_ms` ends (`None`: none is open).
    /// Windows that overlap or touch count as one.
    pub async fn window_until(&self, device_id: &str, at_ms: u64) -> Result<Option<u64>, IdentityError> {
        let windows: Vec<Window> = self.store.get(Collection::MaintenanceWindows, device_id).await?.unwrap_or_default();
        Ok(open_until(&windows, at_ms))
    }

    /// Checks a device's signature over a window request (see `agent_auth::window_message`).
    pub async fn authenticate_window(
        &self,
        device_id: &str,
        challenge: &[u8],
        signature_hex: &str,
        start_ms: u64,
        end_ms: u64,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let message = sightline_proto::agent_auth::window_message(challenge, device_id, start_ms, end_ms);
        self.verify_device_signature(device_id, &message, signature_hex, source).await
    }

    /// Verifies a `close_window` (R3): the device's signature over the close message.
    pub async fn authenticate_close_window(
        &self,
        device_id: &str,
        challenge: &[u8],
        signature_hex: &str,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let message = sightline_proto::agent_auth::close_window_message(challenge, device_id);
        self.verify_device_signature(device_id, &message, signature_hex, source).await
    }

    /// Verifies an `ask_help` (R2): the device's signature over the help message.
    pub async fn authenticate_help(
        &self,
        device_id: &str,
        challenge: &[u8],
        signature_hex: &str,
        source: Option<IpAddr>,
    ) -> Result<Device, IdentityError> {
        let message = sightline_proto::agent_auth::help_message(challenge, device_id);
        self.verify_device_signature(device_id, &message, signature_hex, source).await
    }

    /// A device's record from the store; while the store is unreachable, the record as this node
    /// last read it, if that was within `DEVICE_MEMORY_MS` (R43: the devices a node serves stay
    /// reachable through an outage, for the break-glass sign-in that is then the only way in).
    /// No revocation can be made while the store is away: revocations are written there.
    async fn device_record(&self, device_id: &str) -> Result<Option<Device>, IdentityError> {
        let now = self.now_ms();
        match self.store.get::<Device>(Collection::Devices, device_id).await {
            Ok(device) => {
                let mut seen = self.devices_seen.lock().unwrap_or_else(|e| e.into_inner());
                match &device {
                    Some(d) => seen.insert(device_id.to_owned(), (d.clone(), now)),
                    None => seen.remove(device_id),
                };
                Ok(device)
            }
            Err(StoreError::Unavailable(why)) => {
                let seen = self.devices_seen.lock().unwrap_or_else(|e| e.into_inner());
                match seen.get(device_id) {
                    Some((device, read_ms)) if now.saturating_sub(*read_ms) <= DEVICE_MEMORY_MS => {
                        tracing::warn!(device = device_id, %why, "store unreachable: using the device's record as this node last read it");
                        Ok(Some(device.clone()))
                    }
                    _ => Err(StoreError::Unavailable(why).into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets what this node remembered of a device (it was revoked or re-keyed, here or on
    /// another node): an outage then cannot bring its old record back.
    pub fn forget_device(&self, device_id: &str) {
        self.devices_seen.lock().unwrap_or_else(|e| e.into_inner()).remove(device_id);
    }

    /// Whether a device is still enrolled and not revoked (sockets re-check this periodically).
    pub async fn device_active(&self, device_id: &str) -> Result<bool, IdentityError> {
        Ok(self.device_record(device_id).await?.is_some_and(|d| !d.revoked))
    }

    /// Whether `device_id` is still enrolled with `public_key` (hex): not revoked, not re-keyed.
    pub async fn device_holds_key(&self, device_id: &str, public_key: &str) -> Result<bool, IdentityError> {
        let device = self.device_record(device_id).await?;
        Ok(device.is_some_and(|d| !d.revoked && d.public_key == public_key))
    }

    /// An enrolled device, if it exists.
    pub async fn device(&self, device_id: &str) -> Result<Option<Device>, IdentityError> {
        self.device_record(device_id).await
    }

    pub async fn devices(&self) -> Result<Vec<Device>, IdentityError> {
        let mut list: Vec<Device> = self.store.list(Collection::Devices).await?.into_iter().map(|(_, d)| d).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    pub async fn revoke_device(
        &self,
        actor: &str,
        device_id: &str,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let updated = self
            .store
            .update::<Device, _>(Collection::Devices, device_id, |d| {
                let mut d = d?;
                if d.revoked {
                    return None;
                }
                d.revoked = true;
                Some(d)
            })
            .await?;
        if updated.is_none() {
            return Err(IdentityError::NotFound);
        }
        self.forget_device(device_id);
        self.store.publish(&Revocation::Device { device_id: device_id.to_owned() }).await?;
        self.emit(EventKind::DeviceRevoked, Outcome::Success, actor, Some(&format!("device:{device_id}")), source, "");
        Ok(())
    }
}

/// The end of the run of windows open at `at_ms`, following windows that start before the one
/// found ends.
fn open_until(windows: &[Window], at_ms: u64) -> Option<u64> {
    let mut until = windows.iter().filter(|w| w.start_ms <= at_ms && at_ms < w.end_ms).map(|w| w.end_ms).max()?;
    while let Some(later) = windows.iter().filter(|w| w.start_ms <= until && w.end_ms > until).map(|w| w.end_ms).max() {
        until = later;
    }
    Some(until)
}

#[cfg(test)]
mod window_tests {
    use super::*;

    fn w(start_ms: u64, end_ms: u64) -> Window {
        Window { start_ms, end_ms, opened_by: "t".into() }
    }

    #[test]
    fn the_open_window_ends_where_the_run_of_windows_ends() {
        assert_eq!(open_until(&[], 5), None);
        assert_eq!(open_until(&[w(10, 20)], 5), None, "not yet open");
        assert_eq!(open_until(&[w(10, 20)], 20), None, "closed at its end");
        assert_eq!(open_until(&[w(0, 20)], 5), Some(20));
        // A window that starts before the open one ends extends it; one after a gap does not.
        assert_eq!(open_until(&[w(0, 20), w(15, 40), w(40, 50), w(60, 90)], 5), Some(50));
    }
}
