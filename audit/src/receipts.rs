//! The user's consent, checked against the record alone (R2, R5, R39): every signed receipt the
//! log holds (consent and elevation decisions, late ones included) against the key the record
//! gave its device at the time: its `device.enrolled` record, or a later `device.key_changed`
//! (an admin's re-key token). The relay checks receipts live with the key its store holds;
//! whoever can write that store could swap the key and have forged receipts accepted. This
//! check finds them: a receipt signed by any key but the one on record fails, naming the record.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use ed25519_dalek::{Signature, VerifyingKey};
use sightline_core::audit::Record;
use sightline_proto::ConsentReceipt;

use crate::commands::NodeLog;
use crate::events::{DEVICE_KEY_RECORDS, enrolled_key};

/// Where a receipt starts in a record's detail (the relay's consent records).
const RECEIPT_MARK: &str = "by the device key: ";

/// What the receipt check established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptReport {
    /// Receipts whose signature the enrolled key verified.
    pub verified: u64,
    /// The devices they came from.
    pub devices: BTreeSet<String>,
}

/// The receipt a record carries, if any.
fn receipt_of(record: &Record) -> anyhow::Result<Option<ConsentReceipt>> {
    let Some((_, json)) = record.detail.split_once(RECEIPT_MARK) else { return Ok(None) };
    let receipt = sightline_proto::strict::from_str(json)
        .with_context(|| format!("record {} of {}: the receipt in it does not parse", record.seq, record.node))?;
    Ok(Some(receipt))
}

/// Checks every receipt in `logs` (each already verified against the auditor's keys) against
/// the key its device had on record (enrolment or key change) when the receipt was recorded, in
/// any of the logs.
pub fn check_receipts(logs: &[NodeLog]) -> anyhow::Result<ReceiptReport> {
    let records: Vec<&Record> = logs.iter().flat_map(|l| l.records.iter()).collect();
    let mut report = ReceiptReport::default();
    for record in &records {
        let Some(receipt) = receipt_of(record)? else { continue };
        let device = format!("device:{}", receipt.device_id);
        let enrolment = records
            .iter()
            .filter(|r| DEVICE_KEY_RECORDS.contains(&r.kind.as_str()) && r.actor == device && r.ts_ms <= record.ts_ms)
            .max_by_key(|r| r.ts_ms)
            .with_context(|| {
                format!(
                    "record {} of {}: a receipt of {device}, whose enrolment is not in the logs given (add the log of the node that enrolled it)",
                    record.seq, record.node
                )
            })?;
        let key = enrolled_key(&enrolment.detail).with_context(|| {
            format!("record {} of {}: the enrolment of {device} names no key", enrolment.seq, enrolment.node)
        })?;
        let key = hex::decode(key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .with_context(|| {
                format!(
                    "record {} of {}: the enrolled key of {device} is not an Ed25519 key",
                    enrolment.seq, enrolment.node
                )
            })?;
        let signature = hex::decode(&receipt.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok());
        let message = sightline_proto::agent_auth::consent_message(&receipt);
        if signature.is_none_or(|s| key.verify_strict(&message, &Signature::from_bytes(&s)).is_err()) {
            bail!(
                "record {} of {}: the receipt of {device} (session {}) is not signed by the device's key on record (record {} of {}): another key signed it",
                record.seq,
                record.node,
                receipt.session_id,
                enrolment.seq,
                enrolment.node
            );
        }
        report.verified += 1;
        report.devices.insert(receipt.device_id);
    }
    Ok(report)
}
