//! A live session driven directly, as its sockets drive it: only the device's signed decisions
//! move it, every event carries the session's facts and its actor's address, late decisions are
//! kept and not applied, elevation needs exactly the pending levels approved, and the operator
//! cannot lift the user's pause (R2, R5, R7, R8, R10, R38).

use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use sightline_audit::events::{EventKind, MemorySink};
use sightline_proto::{
    AgentInfo, ConsentKind, ConsentReceipt, Decision, EndReason, Level, OperatorInfo, Party, RelayToAgent,
    SessionEvent, SessionPhase,
};
use sightline_relay::hub::OnlineAgent;
use sightline_relay::session::{LiveSession, REFUSED_CONTROLS_RECORDED, Request, SessionError};

/// A relay with one enrolled device (key `[7; 32]`) in `segment`, online.
struct Fixture {
    state: sightline_relay::state::AppState,
    events: MemorySink,
    key: SigningKey,
    device_id: String,
    agent: Arc<OnlineAgent>,
    _outbox: tokio::sync::mpsc::Receiver<RelayToAgent>,
    _dir: tempfile::TempDir,
}

async fn fixture(segment: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = <sightline_relay::config::Config as clap::Parser>::parse_from([
        "relay".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
        "--public-url=http://localhost:1/".to_owned(),
        format!("--data-dir={}", dir.path().display()),
        "--node=test".to_owned(),
        concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/policy-sample.toml").to_owned(),
        format!("--recording-recipient={}", age::x25519::Identity::generate().to_public()),
    ]);
    let events = MemorySink::default();
    let state = sightline_relay::server::build(&config, Arc::new(events.clone())).await.unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let token = state.identity.create_agent_token("test", segment, None).await.unwrap();
    let device =
        state.identity.enrol_device(&token, &hex::encode(key.verifying_key().to_bytes()), "desk", None).await.unwrap();
    let info = AgentInfo {
        agent_id: device.id.clone(),
        name: "desk".into(),
        segment: segment.into(),
        width: 1,
        height: 1,
        user: "alice".into(),
        unattended: false,
        node: String::new(),
    };
    let (agent, outbox) = state.hub.register_agent(info, Some("192.0.2.50".parse().unwrap())).unwrap();
    Fixture { state, events, key, device_id: device.id, agent, _outbox: outbox, _dir: dir }
}

impl Fixture {
    /// Opens a session asking for `levels`, under the segment's terms.
    async fn open(&self, levels: &[Level]) -> Arc<LiveSession> {
        let segment = &self.state.policy.segments[&self.agent.link.info.segment];
        let request = Request {
            operator: OperatorInfo {
                name: "op".into(),
                display_name: "Op".into(),
                role: "operator".into(),
                organisation: "IT".into(),
            },
            ticket: "INC-1".into(),
            reason: "incident".into(),
            levels: levels.iter().copied().collect(),
            allowed: segment.levels.clone(),
            source: None,
            masks: segment.masks.clone(),
            window_required: segment.maintenance_window,
            help_request: None,
            help_code: None,
        };
        LiveSession::open(
            self.state.identity.clone(),
            self.agent.link.clone(),
            self.agent.sessions.clone(),
            request,
            segment.terms,
            &self.state.recordings,
        )
        .await
        .unwrap()
    }

    /// The device's signed decision for `session`.
    fn receipt(&self, session: &LiveSession, kind: ConsentKind, levels: &[Level]) -> ConsentReceipt {
        signed(
            &self.key,
            ConsentReceipt {
                kind,
                session_id: session.id.clone(),
                device_id: self.device_id.clone(),
                operator: "op".into(),
                ticket: "INC-1".into(),
                endpoint_user: "alice".into(),
                decision: Decision::Allow,
                levels: levels.to_vec(),
                time_ms: 1,
                signature: String::new(),
            },
        )
    }

    fn events_of(&self, kind: EventKind) -> Vec<sightline_audit::events::Event> {
        self.events.0.lock().unwrap().iter().filter(|e| e.kind == kind).cloned().collect()
    }
}

fn signed(key: &SigningKey, mut r: ConsentReceipt) -> ConsentReceipt {
    r.signature = hex::encode(key.sign(&sightline_proto::agent_auth::consent_message(&r)).to_bytes());
    r
}

/// A decision counts only with the enrolled device's signature over this very session's
/// facts; anything else is refused and leaves the session waiting (R2, R5).
#[tokio::test]
async fn only_a_receipt_signed_by_the_device_for_this_session_moves_it() {
    let f = fixture("office").await;
    let stranger = SigningKey::from_bytes(&[8; 32]);
    let session = f.open(&[Level::View, Level::Control]).await;
    let allow = f.receipt(&session, ConsentKind::Session, &[Level::View, Level::Control]);
    let refused = [
        signed(&stranger, allow.clone()),
        ConsentReceipt { signature: "00".into(), ..allow.clone() },
        signed(&f.key, ConsentReceipt { ticket: "INC-2".into(), ..allow.clone() }),
        signed(&f.key, ConsentReceipt { session_id: "other".into(), ..allow.clone() }),
        // Signed for view only, then widened in transit.
        ConsentReceipt {
            levels: vec![Level::View, Level::Control],
            ..signed(&f.key, ConsentReceipt { levels: vec![Level::View], ..allow.clone() })
        },
        // The endpoint account changed in transit.
        ConsentReceipt { endpoint_user: "mallory".into(), ..allow.clone() },
        // Signed by the device, but for another account than the one logged in at hello.
        signed(&f.key, ConsentReceipt { endpoint_user: "mallory".into(), ..allow.clone() }),
    ];
    for receipt in refused {
        assert!(matches!(session.accept_receipt(receipt).await, Err(SessionError::BadReceipt(_))));
        assert_eq!(session.status().borrow().phase, SessionPhase::AwaitingConsent);
    }
    session.accept_receipt(allow).await.unwrap();
    let status = session.status().borrow().clone();
    assert_eq!((status.phase, status.granted), (SessionPhase::Active, vec![Level::View, Level::Control]));

    // Every session event carries the session's facts as fields (R10).
    let allowed = f.events_of(EventKind::ConsentAllowed);
    let facts = allowed[0].session.as_ref().unwrap();
    assert_eq!(
        (facts.ticket.as_str(), facts.endpoint_user.as_str(), facts.operator.as_str(), facts.device_id.as_str()),
        ("INC-1", "alice", "op", f.device_id.as_str())
    );
    assert_eq!(
        f.events_of(EventKind::SessionStarted)[0].session.as_ref().unwrap().levels,
        [Level::View, Level::Control]
    );
}

/// Each event carries its actor's own address (R38): the user's decision the endpoint's, the
/// admin's kill the admin's, the system's none.
#[tokio::test]
async fn events_carry_the_acting_partys_address() {
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    let allow = f.receipt(&session, ConsentKind::Session, &[Level::View]);
    session.accept_receipt(allow).await.unwrap();
    let allowed = f.events_of(EventKind::ConsentAllowed);
    assert_eq!(allowed[0].source, Some("192.0.2.50".parse().unwrap()), "the endpoint's address");
    session.note_address("ada", "198.51.100.9".parse().unwrap());
    session.kill("ada");
    let ended = f.events_of(EventKind::SessionEnded);
    assert_eq!(ended[0].actor, "ada");
    assert_eq!(ended[0].source, Some("198.51.100.9".parse().unwrap()), "the admin's address");
}

/// The user's click and the relay's deadline can cross: a decision signed just after the
/// session ended changes nothing, but is verified and kept as evidence (R2, R10).
#[tokio::test]
async fn a_decision_that_arrives_after_the_end_is_kept_not_applied() {
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    session.kill("ada");
    let late = f.receipt(&session, ConsentKind::Session, &[Level::View]);
    let found = f.agent.sessions.by_id(&session.id).expect("the ended session is still found by id");
    assert_eq!(found.accept_receipt(late.clone()).await, Err(SessionError::Ended));
    assert_eq!(session.status().borrow().phase, SessionPhase::Ended);
    let kept = f.events_of(EventKind::ConsentLate);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].detail.contains(&late.signature), "the signed receipt is in the record");
    // A replayed copy is refused and not recorded again.
    assert_eq!(found.accept_receipt(late.clone()).await, Err(SessionError::Ended));
    assert_eq!(f.events_of(EventKind::ConsentLate).len(), 1);
    // A forged late receipt is refused as forged, not kept as evidence.
    let forged = ConsentReceipt { levels: vec![Level::View, Level::Control], ..late };
    assert!(matches!(found.accept_receipt(forged).await, Err(SessionError::BadReceipt(_))));
    assert_eq!(f.events_of(EventKind::ConsentLate).len(), 1);
}

/// A request the agent declines (issue 13: never ignored) ends with the agent's reason, cut to
/// a bounded, printable length.
#[tokio::test]
async fn a_request_the_agent_declines_ends_with_its_reason() {
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    assert_eq!(session.status().borrow().phase, SessionPhase::AwaitingConsent);
    session.declined_by_endpoint(&format!("another session runs here\n{}", "x".repeat(500)));
    let status = session.status().borrow().clone();
    assert_eq!(status.phase, SessionPhase::Ended);
    let Some(EndReason::DeclinedByEndpoint(why)) = status.end_reason else { panic!("{status:?}") };
    assert!(why.starts_with("another session runs here") && why.chars().count() == 200 && !why.contains('\n'));
    assert_eq!(f.events_of(EventKind::SessionEnded).len(), 1);
}

/// An end the endpoint's clock decided is the same end, with the same reason and record, as
/// one the relay's timers make (its actor names the endpoint); an end only the relay may decide
/// is not taken at its word (issue 12).
#[tokio::test]
async fn an_idle_end_the_agent_reports_ends_the_session_with_the_same_reason() {
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
    session.user_event(SessionEvent::Ended { reason: EndReason::Idle });
    let status = session.status().borrow().clone();
    assert_eq!((status.phase, status.end_reason), (SessionPhase::Ended, Some(EndReason::Idle)));
    let ended = f.events_of(EventKind::SessionEnded);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].actor, "agent");
    assert!(ended[0].detail.starts_with(&EndReason::Idle.describe()), "{}", ended[0].detail);

    // Control: a reason the endpoint cannot decide ends the session (the endpoint has ended)
    // under its own name, never as the claimed admin kill.
    let next = f.open(&[Level::View]).await;
    next.accept_receipt(f.receipt(&next, ConsentKind::Session, &[Level::View])).await.unwrap();
    next.user_event(SessionEvent::Ended { reason: EndReason::KilledByAdmin("root".into()) });
    let status = next.status().borrow().clone();
    let Some(EndReason::DeclinedByEndpoint(why)) = status.end_reason else { panic!("{status:?}") };
    assert!(why.contains("ended by administrator root"), "{why}");
    assert_eq!(f.events_of(EventKind::SessionEnded).len(), 2);
}

/// In a segment that needs a senior's approval, control comes only with the user's signed
/// confirmation and the senior's approval of exactly the levels pending (R7).
#[tokio::test]
async fn a_senior_approves_exactly_the_pending_elevation() {
    let f = fixture("payment").await;
    let session = f.open(&[Level::View]).await;
    session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
    assert_eq!(session.approve("sam", &[Level::Control].into()), Err(SessionError::NothingToApprove));
    assert!(!session.elevate([Level::Control].into()).is_empty());
    assert!(matches!(session.approve("sam", &[Level::Clipboard].into()), Err(SessionError::OtherElevation { .. })));
    session.approve("sam", &[Level::Control].into()).unwrap();
    assert_eq!(session.status().borrow().granted, [Level::View], "the user has not confirmed yet");
    assert_eq!(session.approve("sam", &[Level::Control].into()), Err(SessionError::NothingToApprove));
    session.accept_receipt(f.receipt(&session, ConsentKind::Elevation, &[Level::Control])).await.unwrap();
    assert_eq!(session.status().borrow().granted, [Level::View, Level::Control]);
    let approved = f.events_of(EventKind::ElevationApproved);
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].actor, "sam");

    // Where the segment needs no senior, there is nothing for one to approve.
    let office = fixture("office").await;
    let session = office.open(&[Level::View]).await;
    session.accept_receipt(office.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
    assert!(!session.elevate([Level::Control].into()).is_empty());
    assert_eq!(session.approve("sam", &[Level::Control].into()), Err(SessionError::NothingToApprove));
}

/// The operator cannot lift a pause the user made (R8); the attempt is recorded as a refusal,
/// so an auditor sees an operator pressing against the user's decision.
#[tokio::test]
async fn an_operator_resume_of_the_users_pause_is_refused_and_recorded() {
    use sightline_audit::events::Outcome::{Failure, Success};
    use sightline_proto::ControlAction;
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
    session.user_event(SessionEvent::Pause { by: Party::User });
    // The operator is told why (the viewer shows it), as the record says.
    assert_eq!(
        session.operator_control(ControlAction::Resume),
        Err("the user paused the session; only the user resumes it")
    );
    assert_eq!(session.status().borrow().phase, SessionPhase::Paused);
    let resumed = f.events_of(EventKind::SessionResumed);
    assert_eq!(resumed.len(), 1);
    assert_eq!((resumed[0].outcome, resumed[0].actor.as_str()), (Failure, "op"));
    assert!(resumed[0].detail.contains("only the user resumes it"), "{}", resumed[0].detail);

    // Control: the user's own resume lifts it, and a pause the operator made is the operator's
    // to lift.
    session.user_event(SessionEvent::Resume { by: Party::User });
    assert_eq!(session.status().borrow().phase, SessionPhase::Active);
    assert_eq!(session.operator_control(ControlAction::Pause), Ok(()));
    assert_eq!(session.operator_control(ControlAction::Resume), Ok(()));
    assert_eq!(session.status().borrow().phase, SessionPhase::Active);
    let outcomes: Vec<_> = f.events_of(EventKind::SessionResumed).iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [Failure, Success, Success]);
}

#[tokio::test]
async fn refused_operator_controls_past_the_budget_are_counted_in_the_end_record_not_recorded_one_by_one() {
    use sightline_proto::ControlAction;
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
    session.user_event(SessionEvent::Pause { by: Party::User });
    let extra = 7;
    for _ in 0..REFUSED_CONTROLS_RECORDED + extra {
        assert!(session.operator_control(ControlAction::Resume).is_err());
    }
    assert_eq!(f.events_of(EventKind::SessionResumed).len() as u64, REFUSED_CONTROLS_RECORDED);
    // Control: a refused pause past the budget is not recorded either, and the end says how many.
    assert_eq!(session.operator_control(ControlAction::Pause), Err("the session is not active"));
    assert!(f.events_of(EventKind::SessionPaused).iter().all(|e| e.actor != "op"));
    assert_eq!(session.operator_control(ControlAction::End), Ok(()));
    let ended = f.events_of(EventKind::SessionEnded);
    assert_eq!(ended.len(), 1);
    let counted = format!("refused pauses and resumes not recorded one by one: {}", extra + 1);
    assert!(ended[0].detail.ends_with(&counted), "{}", ended[0].detail);
}

/// The user's pause and resume are recorded as the session decided them, not as the endpoint
/// sent them (issue 23): a resume of the relay's own pause (its recorder stalled) is refused, and
/// the record says so.
#[tokio::test]
async fn a_users_pause_or_resume_is_recorded_as_the_session_decided() {
    use sightline_audit::events::Outcome::{Failure, Success};
    use sightline_core::session::Event;
    let f = fixture("office").await;
    let session = f.open(&[Level::View]).await;
    session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
    session.step(Event::RecorderStalled, "system");
    assert_eq!(session.status().borrow().phase, SessionPhase::Paused);
    session.user_event(SessionEvent::Resume { by: Party::User });
    assert_eq!(session.status().borrow().phase, SessionPhase::Paused, "only the recovery lifts the relay's pause");
    let resumed = f.events_of(EventKind::SessionResumed);
    assert_eq!(resumed.len(), 1);
    assert_eq!((resumed[0].outcome, resumed[0].actor.as_str()), (Failure, "user@desk"));
    assert!(resumed[0].detail.contains("the relay paused the session"), "{}", resumed[0].detail);

    // Control: once the recorder recovers, the user's own pause and resume are carried out and
    // recorded as such.
    session.step(Event::RecorderRecovered, "system");
    session.user_event(SessionEvent::Pause { by: Party::User });
    assert_eq!(session.status().borrow().phase, SessionPhase::Paused);
    session.user_event(SessionEvent::Resume { by: Party::User });
    assert_eq!(session.status().borrow().phase, SessionPhase::Active);
    let outcomes: Vec<_> = f.events_of(EventKind::SessionResumed).iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [Failure, Success]);
    let paused: Vec<_> = f.events_of(EventKind::SessionPaused).iter().map(|e| (e.outcome, e.detail.clone())).collect();
    assert_eq!(paused, [(Success, "by the user".to_owned())]);
}
