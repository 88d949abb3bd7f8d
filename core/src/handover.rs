//! A session that survives the loss of its relay node (R43), without IO: what the node running
//! it publishes with every heartbeat (`Handover`), and the rules by which a surviving node takes
//! it over when the endpoint reconnects there and claims it (`check_claim`).
//!
//! The endpoint's claim carries the receipts its user signed with the device key (the consent,
//! then each elevation), so a surviving node grants no level the user did not sign for, however
//! the lost node's record reads; the record in turn caps the claim, so a level that lapsed or
//! was never completed there does not come back. Signatures are checked by the caller against
//! the enrolled key; everything else is checked here.

use serde::{Deserialize, Serialize};
use sightline_proto::mask::MaskRule;
use sightline_proto::{ConsentKind, ConsentReceipt, Decision, Level, OperatorInfo, Party, ResumeClaim, SessionTerms};

use crate::session::{Levels, Moved};

/// How long an endpoint keeps its session suspended after losing its relay node, waiting for a
/// surviving node to take it over; past this it ends the session itself.
pub const RESUME_GRACE_MS: u64 = 15_000;

/// A running session as the node that runs it publishes it for a possible successor: the
/// request, the terms it runs under (fixed at its start), and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub session_id: String,
    pub agent_id: String,
    pub operator: OperatorInfo,
    pub ticket: String,
    pub reason: String,
    pub requested: Vec<Level>,
    /// The levels the segment allowed when the session started (elevation's bound).
    pub allowed: Vec<Level>,
    pub granted: Vec<Level>,
    pub grant_expires_ms: Option<u64>,
    /// When the session was asked for (Unix ms).
    pub created_ms: u64,
    /// When the user consented (Unix ms): the maximum duration counts from here.
    pub started_ms: u64,
    pub paused_by: Option<Party>,
    /// Whether both sides were warned of the session's end.
    pub warned: bool,
    pub terms: SessionTerms,
    pub masks: Vec<MaskRule>,
    pub window_required: bool,
    pub help_request: Option<String>,
    /// The recording as it stood at the heartbeat, where the session is recorded.
    pub recording: Option<RunHead>,
}

/// How far a recording had come: its id, the chunks written and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHead {
    pub recording_id: String,
    pub chunks: u64,
    pub last_sha256: Option<String>,
}

/// Why an endpoint's claim on a lost node's session is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the claim carries no consent receipt")]
    NoConsent,
    #[error("the first receipt is not the session's allow ({0})")]
    NotAnAllow(String),
    #[error("a receipt names another session, device, operator, ticket or endpoint account")]
    OtherSession,
    #[error("a later receipt is not an allowed elevation")]
    NotAnElevation,
    #[error("the session is served {0}, and the consent receipt says otherwise")]
    WrongKind(&'static str),
}

/// Checks an endpoint's claim (`device_id`, its account `endpoint_user`) against the session the
/// lost node published, signatures aside. Returns the levels the session runs with: what the
/// user signed for that the record still grants.
pub fn check_claim(
    claim: &ResumeClaim,
    handover: &Handover,
    device_id: &str,
    endpoint_user: &str,
) -> Result<Levels, ClaimError> {
    let (consent, elevations) = claim.receipts.split_first().ok_or(ClaimError::NoConsent)?;
    let ours = |r: &ConsentReceipt| {
        r.session_id == handover.session_id
            && claim.session_id == handover.session_id
            && handover.agent_id == device_id
            && r.device_id == device_id
            && r.operator == handover.operator.name
            && r.ticket == handover.ticket
            && r.endpoint_user == endpoint_user
    };
    if !claim.receipts.iter().all(ours) {
        return Err(ClaimError::OtherSession);
    }
    match (consent.kind, consent.decision, handover.terms.unattended) {
        (ConsentKind::Session, Decision::Allow, false) | (ConsentKind::Unattended, Decision::Allow, true) => {}
        (ConsentKind::Session, Decision::Allow, true) => return Err(ClaimError::WrongKind("unattended")),
        (ConsentKind::Unattended, Decision::Allow, false) => return Err(ClaimError::WrongKind("attended")),
        (kind, decision, _) => return Err(ClaimError::NotAnAllow(format!("{kind:?} {decision:?}"))),
    }
    if elevations.iter().any(|r| r.kind != ConsentKind::Elevation || r.decision != Decision::Allow) {
        return Err(ClaimError::NotAnElevation);
    }
    let signed: Levels = claim.receipts.iter().flat_map(|r| r.levels.iter().copied()).collect();
    let granted: Levels = handover.granted.iter().copied().collect();
    Ok(signed.intersection(&granted).copied().collect())
}

impl Handover {
    /// The session's state for `Session::resume`, with the levels `check_claim` returned.
    pub fn moved(&self, levels: Levels) -> Moved {
        Moved {
            levels,
            grant_expires_ms: self.grant_expires_ms,
            started_ms: self.started_ms,
            paused_by: self.paused_by,
            warned: self.warned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    fn handover(granted: &[Level], unattended: bool) -> Handover {
        Handover {
            session_id: "s1".into(),
            agent_id: "dev".into(),
            operator: OperatorInfo {
                name: "op".into(),
                display_name: "Op".into(),
                role: "operator".into(),
                organisation: "Bank".into(),
            },
            ticket: "INC-1".into(),
            reason: "incident".into(),
            requested: granted.to_vec(),
            allowed: vec![View, Chat, Control],
            granted: granted.to_vec(),
            grant_expires_ms: None,
            created_ms: 1,
            started_ms: 2,
            paused_by: None,
            warned: false,
            terms: SessionTerms {
                consent_timeout_s: 60,
                grant_expiry_s: 300,
                max_duration_s: 3600,
                idle_timeout_s: 600,
                observer_required_for_control: false,
                recording_required: true,
                elevation_needs_senior: false,
                active_confirmation: false,
                ends_at: None,
                end_warning_s: 0,
                unattended,
            },
            masks: Vec::new(),
            window_required: false,
            help_request: None,
            recording: None,
        }
    }

    fn receipt(kind: ConsentKind, decision: Decision, levels: &[Level]) -> ConsentReceipt {
        ConsentReceipt {
            kind,
            session_id: "s1".into(),
            device_id: "dev".into(),
            operator: "op".into(),
            ticket: "INC-1".into(),
            endpoint_user: "alice".into(),
            decision,
            levels: levels.to_vec(),
            time_ms: 3,
            signature: String::new(),
        }
    }

    fn claim(receipts: Vec<ConsentReceipt>) -> ResumeClaim {
        ResumeClaim { session_id: "s1".into(), receipts }
    }

    #[test]
    fn a_claim_takes_over_only_what_the_user_signed_and_the_lost_node_still_granted() {
        let consent = receipt(ConsentKind::Session, Decision::Allow, &[View, Chat]);
        let elevation = receipt(ConsentKind::Elevation, Decision::Allow, &[Control]);
        let both = claim(vec![consent.clone(), elevation.clone()]);
        let set = |l: &[Level]| l.iter().copied().collect::<Levels>();
        assert_eq!(
            check_claim(&both, &handover(&[View, Chat, Control], false), "dev", "alice"),
            Ok(set(&[View, Chat, Control]))
        );
        // The record caps the claim: control lapsed there, so it does not come back.
        assert_eq!(check_claim(&both, &handover(&[View, Chat], false), "dev", "alice"), Ok(set(&[View, Chat])));
        // The claim caps the record: a level the user never signed for is not taken over.
        let only_consent = claim(vec![consent.clone()]);
        assert_eq!(
            check_claim(&only_consent, &handover(&[View, Chat, Control], false), "dev", "alice"),
            Ok(set(&[View, Chat]))
        );
    }

    #[test]
    fn a_claim_that_is_not_the_sessions_own_consent_is_refused() {
        let h = handover(&[View], false);
        let allow = receipt(ConsentKind::Session, Decision::Allow, &[View]);
        assert_eq!(check_claim(&claim(vec![]), &h, "dev", "alice"), Err(ClaimError::NoConsent));
        assert!(matches!(
            check_claim(&claim(vec![receipt(ConsentKind::Session, Decision::Deny, &[])]), &h, "dev", "alice"),
            Err(ClaimError::NotAnAllow(_))
        ));
        // Another device, endpoint account, operator, ticket or session.
        assert_eq!(check_claim(&claim(vec![allow.clone()]), &h, "other", "alice"), Err(ClaimError::OtherSession));
        assert_eq!(check_claim(&claim(vec![allow.clone()]), &h, "dev", "mallory"), Err(ClaimError::OtherSession));
        for change in [
            |r: &mut ConsentReceipt| r.operator = "someone".into(),
            |r: &mut ConsentReceipt| r.ticket = "INC-2".into(),
            |r: &mut ConsentReceipt| r.session_id = "s2".into(),
        ] {
            let mut r = allow.clone();
            change(&mut r);
            assert_eq!(check_claim(&claim(vec![r]), &h, "dev", "alice"), Err(ClaimError::OtherSession));
        }
        let mut elsewhere = claim(vec![allow.clone()]);
        elsewhere.session_id = "s2".into();
        assert_eq!(check_claim(&elsewhere, &h, "dev", "alice"), Err(ClaimError::OtherSession));
        // An unattended receipt for an attended session, and the other way round (R2).
        let unattended = receipt(ConsentKind::Unattended, Decision::Allow, &[View]);
        assert_eq!(
            check_claim(&claim(vec![unattended.clone()]), &h, "dev", "alice"),
            Err(ClaimError::WrongKind("attended"))
        );
        assert_eq!(
            check_claim(&claim(vec![allow.clone()]), &handover(&[View], true), "dev", "alice"),
            Err(ClaimError::WrongKind("unattended"))
        );
        assert!(check_claim(&claim(vec![unattended]), &handover(&[View], true), "dev", "alice").is_ok());
        // Later receipts must be allowed elevations.
        let refused = receipt(ConsentKind::Elevation, Decision::Deny, &[]);
        assert_eq!(
            check_claim(&claim(vec![allow.clone(), refused]), &h, "dev", "alice"),
            Err(ClaimError::NotAnElevation)
        );
        assert_eq!(
            check_claim(&claim(vec![allow.clone(), allow]), &h, "dev", "alice"),
            Err(ClaimError::NotAnElevation)
        );
    }
}
