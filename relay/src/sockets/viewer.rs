//! The viewer's WebSocket: the roster of online agents, asking for a session (policy, then the
//! user's consent, then media), observing one, and the operator's session controls.
//!
//! A session request (`watch`) names a ticket and a reason from the policy's catalog, and is
//! decided before any media is set up, in this order (`open_session`): the audit log must be
//! writable; the operator's request bucket (`request_limits`); `Policy::decide` (the device's
//! segment, the operator's roles and address, the hours in the segment's time zone, the levels,
//! the maintenance window, unattended service); one request per device (a second one while the
//! first waits for the user gets "a request is already waiting" and leaves the first alone); the
//! device's bucket; last, the help request the session answers, if any (`help`). Every refusal
//! reaches the operator with its reason and is a `session.refused` event naming device, ticket
//! and reason; an allowed request becomes a `LiveSession` waiting for consent. The viewer's offer
//! is answered only once the session is active (`open_media`).
//!
//! Maintenance windows (R3): every segment needs one open for the device unless it says
//! `maintenance_window = false`, and unattended service needs one everywhere; a store error
//! counts as no window. Windows are kept by `sightline_identity::devices`.
//!
//! The socket is pinged like the agent's (`wire`), re-checks its login session every 5 s (an
//! idle, expired or revoked one closes it, even if the revocation event was missed) and closes at
//! once on a revocation of its session or user. Those who may start sessions see the help queue,
//! and only requests from segments their roles may connect to; nobody observes their own session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use sightline_core::policy::{AccessRequest, Level};
use sightline_core::roles::{Capability, Role};
use sightline_core::session::{Event, Levels};
use sightline_peer::{ChannelEvent, DataChannel, Peer};
use sightline_proto::channel::{ChannelMessage, LABEL};
use sightline_proto::{
    ErrorCode, OperatorInfo, RelayToViewer, SessionPhase, SessionStatus, ViewEndReason, ViewerToRelay, encode,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::help::HelpError;
use crate::session::{LiveSession, Request, SessionError};
use crate::sockets::forward::{self, Forward, Route};
use crate::sockets::wire::{Heartbeat, Liveness, next_message, send_within};
use crate::state::AppState;
use sightline_audit::AuditUnavailable;
use sightline_audit::events::{EventKind, Outcome};
use sightline_core::cluster::NodeRecord;
use sightline_identity::{AuthUser, Revocation};
use sightline_sfu::Subscriber;

/// Open sockets re-check their session this often, so an expired, idle or revoked session ends
/// even if the revocation event was missed.
const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seat {
    Operator,
    Observer,
}

/// The session a viewer runs or observes.
struct View {
    session: Arc<LiveSession>,
    seat: Seat,
    status: watch::Receiver<SessionStatus>,
    /// The viewer's offer, answered once the user consented.
    pending_sdp: Option<String>,
    media: Option<ViewMedia>,
}

/// Media of a view: the subscriber leg and the task serving its data channel.
struct ViewMedia {
    subscriber: Subscriber,
    channel_task: JoinHandle<()>,
    ended: mpsc::Receiver<ViewEndReason>,
}

type Reply = Option<RelayToViewer>;

enum ViewSignal {
    Status { alive: bool },
    MediaEnded(Option<ViewEndReason>),
}

fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Some(RelayToViewer::Error { code, message: message.into() })
}

/// Serves one viewer connection to completion.
/// `forwarded`: another node carries this socket for its viewer; it is served here, never
/// carried on (no chains or loops while nodes disagree on where a device is).
pub async fn serve(state: AppState, auth: AuthUser, socket: WebSocket, peer: SocketAddr, forwarded: bool) {
    let (hub, identity) = (state.hub.clone(), state.identity.clone());
    let viewer_id = hub.next_id();
    let _open = crate::metrics::ViewerSocket::open();
    let (mut tx, rx) = socket.split();
    let live = Liveness::default();
    let mut rx = rx.inspect(|_| live.heard());
    let mut heartbeat = Heartbeat::default();
    // The lists cover every live node (R43).
    let mut cluster = state.cluster.subscribe();
    let mut revocations = hub.subscribe_revocations();
    let sees_sessions = auth.allows(Capability::ObserveSessions) || auth.allows(Capability::ApproveElevation);
    // Those who start sessions see who asks for help (R2).
    let sees_help = auth.allows(Capability::ViewSessions);
    let mut help = state.help.subscribe();
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    let mut view: Option<View> = None;
    // The view, when it runs on another node.
    let mut carried: Option<Forward> = None;
    tracing::debug!(viewer_id, user = %auth.user.name, %peer, "viewer connected");

    let node_names =
        |view: &sightline_core::cluster::ClusterView| view.nodes().map(|n| n.name.clone()).collect::<Vec<_>>();
    let (mut agents_sent, mut sessions_sent, mut nodes_sent) = {
        let now = cluster.borrow_and_update();
        (now.agents.clone(), now.sessions.clone(), node_names(&now))
    };
    let mut initial = vec![
        RelayToViewer::Reasons { reasons: state.policy.reasons.iter().cloned().collect() },
        RelayToViewer::Agents { agents: agents_sent.clone() },
        RelayToViewer::Nodes { nodes: nodes_sent.clone() },
    ];
    // Observers and seniors see the sessions of the segments their directory groups reach.
    let visible_sessions = |sessions: &[sightline_proto::SessionSummary]| RelayToViewer::Sessions {
        sessions: sessions.iter().filter(|s| auth.user.reaches(&s.segment)).cloned().collect(),
    };
    if sees_sessions {
        initial.push(visible_sessions(&sessions_sent));
    }
    // Only requests from segments this operator may connect to (by role, and by directory group
    // where those narrow it): the code and who asks are not for everyone who starts sessions
    // somewhere.
    // Never the codes: the code proves the operator talks to the person who asked (R2).
    let visible_help = |requests: &[sightline_proto::HelpRequest]| RelayToViewer::HelpRequests {
        requests: requests
            .iter()
            .filter(|r| {
                state
                    .policy
                    .segments
                    .get(&r.segment)
                    .is_some_and(|s| auth.user.roles.iter().any(|role| s.roles.contains(role)))
                    && auth.user.reaches(&r.segment)
            })
            .map(sightline_proto::HelpRequest::queue_entry)
            .collect(),
    };
    if sees_help {
        initial.push(visible_help(&help.borrow_and_update()));
    }
    // TURN credentials for this connection alone, renewed halfway through their life (R42).
    let turn_holder = format!("{}.{viewer_id}", auth.user.id.replace(':', "_"));
    // Only those who watch sessions get them: TURN is not a relay for every signed-in account.
    let watches = auth.allows(Capability::ViewSessions) || auth.allows(Capability::ObserveSessions);
    let turn = state.turn.as_ref().filter(|_| watches);
    let turn_servers = || {
        turn.and_then(|t| match t.servers_for(&turn_holder, identity.now_ms()) {
            Ok(message) => Some(message),
            Err(e) => {
                tracing::error!(error = %e, "cannot issue TURN credentials");
                None
            }
        })
    };
    let mut turn_renewal =
        tokio::time::interval(turn.map_or(std::time::Duration::from_secs(3600), |t| t.renew_every()));
    turn_renewal.tick().await;
    initial.extend(turn_servers());
    for msg in initial {
        if !send_within(&mut tx, Message::Text(encode(&msg).into())).await {
            return;
        }
    }
    loop {
        let view_signal = async {
            let Some(View { status, media, .. }) = view.as_mut() else {
                return std::future::pending().await;
            };
            let media_ended = async {
                match media.as_mut() {
                    Some(m) => m.ended.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = status.changed() => ViewSignal::Status { alive: changed.is_ok() },
                reason = media_ended => ViewSignal::MediaEnded(reason),
            }
        };
        let out: Vec<RelayToViewer> = tokio::select! {
            revoked = revocations.recv() => {
                let mine = match &revoked {
                    Ok(Revocation::Session { sid }) => *sid == auth.claims.sid,
                    Ok(Revocation::User { user_id }) => *user_id == auth.user.id,
                    _ => false,
                };
                if !mine { continue; }
                end_socket(&mut tx).await;
                break;
            }
            _ = heartbeat.next() => {
                // A browser that vanished without closing TCP answers no pings: its session ends
                // as if it had closed (R22).
                if heartbeat.peer_gone(&live) {
                    tracing::info!(viewer_id, user = %auth.user.name, "viewer silent: treating the browser as gone");
                    break;
                }
                if !send_within(&mut tx, Message::Ping(Vec::new().into())).await {
                    break;
                }
                let far_alive = match carried.as_mut() {
                    Some(far) => far.beat().await,
                    None => true,
                };
                if far_alive { Vec::new() } else { carried_lost(&mut carried) }
            }
            _ = recheck.tick() => {
                // Fail closed: a store error ends the socket too.
                if !identity.session_alive(&auth.claims).await.unwrap_or(false) {
                    end_socket(&mut tx).await;
                    break;
                }
                Vec::new()
            }
            changed = cluster.changed() => {
                if changed.is_err() { break; }
                let now = cluster.borrow_and_update().clone();
                let mut out = Vec::new();
                if node_names(&now) != nodes_sent {
                    nodes_sent = node_names(&now);
                    out.push(RelayToViewer::Nodes { nodes: nodes_sent.clone() });
                }
                if now.agents != agents_sent {
                    agents_sent = now.agents;
                    out.push(RelayToViewer::Agents { agents: agents_sent.clone() });
                }
                if sees_sessions && now.sessions != sessions_sent {
                    sessions_sent = now.sessions;
                    out.push(visible_sessions(&sessions_sent));
                }
                out
            }
            _ = turn_renewal.tick(), if turn.is_some() => turn_servers().into_iter().collect(),
            far = async { match carried.as_mut() { Some(f) => f.next().await, None => std::future::pending().await } } => match far {
                Some(msg) => {
                    // The view there ended or was refused: nothing more to carry.
                    if let Some(far) = carried.take_if(|f| !f.in_view()) {
                        far.leave().await;
                    }
                    vec![msg]
                }
                None => carried_lost(&mut carried),
            },
            changed = help.changed(), if sees_help => {
                if changed.is_err() { break; }
                vec![visible_help(&help.borrow_and_update())]
            }
            signal = view_signal => match signal {
                ViewSignal::Status { alive } => {
                let Some(v) = view.as_mut() else { continue };
                if !alive {
                    continue;
                }
                let mut status = v.status.borrow_and_update().clone();
                status.observing = v.seat == Seat::Observer;
                let mut out = vec![RelayToViewer::Session { status: Box::new(status.clone()) }];
                match status.phase {
                    SessionPhase::Ended => {
                        if let Some(v) = view.take() { close_view(viewer_id, v, None).await; }
                    }
                    SessionPhase::Active | SessionPhase::Paused if v.pending_sdp.is_some() => {
                        match open_media(&state, viewer_id, &auth.user.name, v).await {
                            Ok(answer) => out.push(RelayToViewer::WatchAnswer { sdp: answer }),
                            Err(message) => {
                                out.push(RelayToViewer::Error { code: ErrorCode::MediaSetup, message });
                                if let Some(v) = view.take() { close_view(viewer_id, v, Some(Event::End { by: sightline_proto::Party::Operator })).await; }
                            }
                        }
                    }
                    _ => {}
                }
                out
                            }
                ViewSignal::MediaEnded(reason) => {
                    // One account of the end: the session's, when it has one (an agent that went
                    // away ended the session before its views), otherwise the media's. A view
                    // that lost its media ends the operator's session with it.
                    let Some(v) = view.take() else { continue };
                    let mut status = v.status.borrow().clone();
                    status.observing = v.seat == Seat::Observer;
                    close_view(viewer_id, v, Some(Event::OperatorLost)).await;
                    if status.phase == SessionPhase::Ended {
                        vec![RelayToViewer::Session { status: Box::new(status) }]
                    } else {
                        vec![RelayToViewer::ViewEnded { reason: reason.unwrap_or(ViewEndReason::AgentGone) }]
                    }
                }
            },
            incoming = next_message::<ViewerToRelay, _>(&mut rx) => {
                let reply = match incoming {
                    None => break,
                    Some(Err(e)) => error(e.code(), e.to_string()),
                    Some(Ok(msg)) => match forward::route(&state, &auth, &msg, carried.as_ref(), forwarded).await {
                        Route::Here => {
                            if forward::starts_view(&msg) && let Some(far) = carried.take() {
                                far.leave().await;
                            }
                            handle(&state, &auth, peer, viewer_id, &mut view, msg).await
                        }
                        Route::There(node) => carry(&state, &auth, peer, viewer_id, &mut view, &mut carried, &node, msg).await,
                    },
                };
                reply.into_iter().collect()
            }
        };
        let mut sent = true;
        for msg in out {
            if !send_within(&mut tx, Message::Text(encode(&msg).into())).await {
                sent = false;
                break;
            }
        }
        if !sent {
            break;
        }
    }
    if let Some(v) = view.take() {
        // The operator's browser went away: the session ends (R22).
        close_view(viewer_id, v, Some(Event::OperatorLost)).await;
    }
    // Dropped without `unwatch`: the far node ends the session as "operator lost" too.
    drop(carried);
    tracing::debug!(viewer_id, "viewer gone");
}

/// Carries `msg` to the node that holds its device or session (R43), opening the socket there
/// first; a view open here or on a third node ends first, as a new `watch` ends it here.
#[allow(clippy::too_many_arguments)]
async fn carry(
    state: &AppState,
    auth: &AuthUser,
    peer: SocketAddr,
    viewer_id: u64,
    view: &mut Option<View>,
    carried: &mut Option<Forward>,
    node: &NodeRecord,
    msg: ViewerToRelay,
) -> Reply {
    if forward::starts_view(&msg) {
        if let Some(v) = view.take() {
            close_view(viewer_id, v, Some(Event::End { by: sightline_proto::Party::Operator })).await;
        }
        // A new view gets a socket of its own: a late answer about the old one cannot be taken
        // for an answer about it.
        if let Some(far) = carried.take() {
            far.leave().await;
        }
    }
    if carried.is_none() {
        match Forward::open(state, auth, peer.ip(), node).await {
            Ok(far) => *carried = Some(far),
            Err((code, why)) => {
                tracing::warn!(user = %auth.user.name, node = %node.name, %why, "cannot forward a viewer");
                return error(code, why);
            }
        }
    }
    let sent = match carried.as_mut() {
        Some(far) => far.send(&msg).await,
        None => false,
    };
    if sent {
        // Nothing of a view is left there: the socket goes (the next view opens a new one).
        if matches!(msg, ViewerToRelay::Unwatch)
            && let Some(far) = carried.take()
        {
            far.leave().await;
        }
        None
    } else {
        carried.take();
        error(ErrorCode::NodeUnreachable, format!("node {} stopped answering", node.name))
    }
}

/// The node that ran the view went away. A running session moves to a surviving node (R43): the
/// browser is told so, keeps its picture and takes the session up again there (`rejoin`, or
/// `observe`); any other view ended with that node (the browser asks again, through whichever
/// node then holds the device).
fn carried_lost(carried: &mut Option<Forward>) -> Vec<RelayToViewer> {
    match carried.take() {
        Some(far) if far.in_view() => {
            tracing::warn!(node = %far.node, "the node that ran this viewer's session went away");
            match far.running_session() {
                Some(id) => vec![RelayToViewer::SessionMoving { session_id: id.to_owned() }],
                None => vec![RelayToViewer::ViewEnded { reason: ViewEndReason::NodeLost }],
            }
        }
        _ => Vec::new(),
    }
}

/// One message from the viewer.
async fn handle(
    state: &AppState,
    auth: &AuthUser,
    peer: SocketAddr,
    viewer_id: u64,
    view: &mut Option<View>,
    msg: ViewerToRelay,
) -> Reply {
    let operator_session = || view.as_ref().filter(|v| v.seat == Seat::Operator).map(|v| v.session.clone());
    match msg {
        ViewerToRelay::Watch { agent_id, sdp, ticket, reason, levels, help_code } => {
            let asked = SessionAsk {
                agent_id: &agent_id,
                ticket: &ticket,
                reason: &reason,
                levels,
                help_code: help_code.as_deref(),
            };
            watch(state, auth, peer, viewer_id, view, asked, sdp).await
        }
        // The code the caller read out names the endpoint; from there it is that endpoint's Watch,
        // and the code is taken (once, for that endpoint only) with the rest of the request.
        ViewerToRelay::WatchHelp { help_code, sdp, ticket, reason, levels } => {
            if !auth.allows(Capability::ViewSessions) {
                return error(ErrorCode::Forbidden, "your roles do not allow starting sessions");
            }
            // Each guess counts against the operator's request budget: codes are not for trying.
            if let Err(wait) = state.limits.operator(&auth.user.name).await {
                let why = format!("too many session requests; try again in {} s", wait.as_secs() + 1);
                return error(ErrorCode::RateLimited, why);
            }
            let request = match state.help.find(&help_code).await {
                Ok(request) => request,
                Err(e) => {
                    tracing::info!(operator = %auth.user.name, error = %e, "a help code named no open request");
                    return error(ErrorCode::HelpCode, e.to_string());
                }
            };
            let asked = SessionAsk {
                agent_id: &request.agent_id,
                ticket: &ticket,
                reason: &reason,
                levels,
                help_code: Some(&help_code),
            };
            watch(state, auth, peer, viewer_id, view, asked, sdp).await
        }
        ViewerToRelay::Observe { session_id, sdp } => {
            if !auth.allows(Capability::ObserveSessions) {
                return error(ErrorCode::Forbidden, "your roles do not allow observing sessions");
            }
            let Some(session) = state.hub.session(&session_id).filter(|s| !s.is_ended()) else {
                return error(ErrorCode::UnknownSession, "no such session is running");
            };
            if session.request.operator.name == auth.user.name {
                return error(ErrorCode::Forbidden, "the operator cannot observe their own session");
            }
            if !session.arrived() {
                return error(ErrorCode::UnknownSession, "the session is still moving here; try again");
            }
            if !auth.user.reaches(&session.link.info.segment) {
                return error(ErrorCode::Forbidden, "your directory groups do not reach this session's segment");
            }
            if let Some(v) = view.take() {
                close_view(viewer_id, v, Some(Event::End { by: sightline_proto::Party::Operator })).await;
            }
            let mut status = session.status();
            status.mark_changed(); // answers the offer at once if the session is already active
            session.note_address(&auth.user.name, peer.ip());
            session.observer_joined(viewer_id, &auth.user.name);
            *view = Some(View { session, seat: Seat::Observer, status, pending_sdp: Some(sdp), media: None });
            None
        }
        ViewerToRelay::Rejoin { session_id, sdp } => {
            if !auth.allows(Capability::ViewSessions) {
                return error(ErrorCode::Forbidden, "your roles do not allow running sessions");
            }
            let Some(session) = state.hub.session(&session_id).filter(|s| !s.is_ended()) else {
                return error(ErrorCode::UnknownSession, "no such session is running (yet)");
            };
            // Only a session that moved, and only for its own operator: nobody takes another's
            // session, and a running one is not opened twice.
            if !session.moved() || session.request.operator.name != auth.user.name {
                return error(ErrorCode::Forbidden, "only the operator of a session that moved takes it up again");
            }
            if !session.arrived() {
                return error(ErrorCode::UnknownSession, "the session is still moving here; try again");
            }
            if !auth.user.reaches(&session.link.info.segment) {
                return error(ErrorCode::Forbidden, "your directory groups do not reach this session's segment");
            }
            // Once: the operator's view that took it up again is the only one (its own socket may
            // offer again, when an offer crossed the answer).
            let same = view.as_ref().is_some_and(|v| v.session.id == session.id && v.seat == Seat::Operator);
            if session.operator_present() && !same {
                return error(ErrorCode::Forbidden, "the operator has already taken this session up again");
            }
            if let Some(v) = view.take() {
                // The same session asked again (an offer that crossed the answer): only its media
                // is replaced, the session goes on.
                let end = (v.session.id != session.id).then_some(Event::End { by: sightline_proto::Party::Operator });
                close_view(viewer_id, v, end).await;
            }
            session.operator_came_back(peer.ip());
            let mut status = session.status();
            status.mark_changed(); // answers the offer at once: the session runs
            *view = Some(View { session, seat: Seat::Operator, status, pending_sdp: Some(sdp), media: None });
            None
        }
        ViewerToRelay::Unwatch => match view.take() {
            Some(v) => {
                close_view(viewer_id, v, Some(Event::End { by: sightline_proto::Party::Operator })).await;
                None
            }
            None => error(ErrorCode::NotWatching, "no view is open"),
        },
        ViewerToRelay::Control { action } => match operator_session() {
            // Refused (a resume of the user's pause): the operator is told why, never left guessing.
            Some(session) => match session.operator_control(action) {
                Ok(()) => None,
                Err(why) => error(ErrorCode::PolicyDenied, format!("not done: {why}")),
            },
            None => error(ErrorCode::NotWatching, "you run no session"),
        },
        ViewerToRelay::Elevate { levels } => match operator_session() {
            Some(session) => {
                let levels: Levels = levels.into_iter().collect();
                let glass = sightline_core::break_glass::is_break_glass(&auth.user.name)
                    .then(|| sightline_core::break_glass::session_refusal(&levels, false))
                    .flatten();
                if let Some(why) = glass {
                    state.identity.emit(
                        EventKind::AccessDenied,
                        Outcome::Failure,
                        &auth.user.name,
                        Some(&format!("session:{}", session.id)),
                        Some(peer.ip()),
                        why.clone(),
                    );
                    error(ErrorCode::PolicyDenied, why)
                } else if session.elevate(levels).is_empty() {
                    error(
                        ErrorCode::PolicyDenied,
                        "nothing to ask: those levels are granted or not allowed here, or another request is waiting",
                    )
                } else {
                    None
                }
            }
            None => error(ErrorCode::NotWatching, "you run no session"),
        },
    }
}

/// Checks the request against the session policy, then asks the endpoint's user. Every refusal
/// names its reason to the operator and is a security event with the ticket.
async fn open_session(
    state: &AppState,
    auth: &AuthUser,
    peer: SocketAddr,
    asked: SessionAsk<'_>,
) -> Result<Arc<LiveSession>, (ErrorCode, String)> {
    let SessionAsk { agent_id, ticket, reason, levels, help_code } = asked;
    // Fail closed before anything else: no session runs that the audit log cannot record.
    state.identity.audit_available().map_err(|_| (ErrorCode::AuditUnavailable, AuditUnavailable::PUBLIC.to_owned()))?;
    let subject = |device: &str| format!("device:{device} ticket:{} reason:{}", ticket.trim(), reason.trim());
    let refuse = |device: &str, code: ErrorCode, why: String| {
        state.identity.emit(
            EventKind::SessionRefused,
            Outcome::Failure,
            &auth.user.name,
            Some(&subject(device)),
            Some(peer.ip()),
            why.clone(),
        );
        Err((code, why))
    };
    if let Err(wait) = state.limits.operator(&auth.user.name).await {
        let why = format!("too many session requests from you; try again in {} s", wait.as_secs() + 1);
        return refuse(agent_id, ErrorCode::RateLimited, why);
    }
    let agent = state.hub.agent(agent_id).map_err(|e| (ErrorCode::UnknownAgent, e.to_string()))?;
    let link = agent.link.clone();
    // View is the floor of every session; chat, on by default, is left out where the segment
    // switches it off (R20): the status and the prompt show what is asked.
    let mut levels: Levels = levels.into_iter().collect();
    levels.insert(Level::View);
    let levels = state.policy.without_switched_off_defaults(&link.info.segment, &levels);
    let now_ms = state.identity.now_ms();
    // Fail closed: a store error counts as "no window".
    let window_until = state.identity.window_until(&link.info.agent_id, now_ms).await.unwrap_or(None);
    let request = AccessRequest {
        roles: &auth.user.roles,
        segments: auth.user.segments.as_ref(),
        source: peer.ip(),
        segment: &link.info.segment,
        levels: &levels,
        ticket,
        reason,
        now: jiff::Timestamp::now(),
        maintenance_window_until: window_until,
        unattended: link.info.unattended,
        break_glass: sightline_core::break_glass::is_break_glass(&auth.user.name),
    };
    let device = link.info.agent_id.as_str();
    let obligations = match state.policy.decide(&request) {
        Ok(o) => o,
        Err(denial) => return refuse(device, ErrorCode::PolicyDenied, denial.to_string()),
    };
    // A session of a lost node is moving to this device's link (R43): it is the device's session.
    if link.resuming() {
        return refuse(device, ErrorCode::Busy, "this device's session is moving here from a lost relay node".into());
    }
    // One request at a time per device: a second one is refused and leaves the first alone.
    if let Some(running) = agent.sessions.current().filter(|s| !s.is_ended()) {
        let why = if running.status().borrow().phase == SessionPhase::AwaitingConsent {
            "a request is already waiting for this device's user"
        } else {
            "this device already has a session running"
        };
        return refuse(device, ErrorCode::Busy, why.into());
    }
    // Last, so that only a request about to reach the endpoint draws on the device's budget.
    if let Err(wait) = state.limits.device(device) {
        let why = format!("too many session requests for this device; try again in {} s", wait.as_secs() + 1);
        return refuse(device, ErrorCode::RateLimited, why);
    }
    // The help request this session answers is taken last: a request refused above leaves it
    // open for the next try.
    let help_request = match help_code {
        None => None,
        Some(code) => match state.help.take(code, device).await {
            Ok(request) => Some(request),
            Err(HelpError::Store(e)) => {
                tracing::error!(error = %e, "cannot read help requests");
                return refuse(device, ErrorCode::HelpCode, "help requests cannot be read right now".into());
            }
            Err(e) => return refuse(device, ErrorCode::HelpCode, e.to_string()),
        },
    };
    let segment = state.policy.segments.get(&link.info.segment);
    let allowed = segment.map(|s| s.levels.clone()).unwrap_or_default();
    let masks = segment.map(|s| s.masks.clone()).unwrap_or_default();
    // An unattended session holds only inside a window, whatever the segment's attended rule.
    let window_required = segment.is_some_and(|s| s.maintenance_window) || obligations.unattended;
    let role = if auth.user.roles.contains(&Role::SeniorOperator) { Role::SeniorOperator } else { Role::Operator };
    let request = Request {
        operator: OperatorInfo {
            name: auth.user.name.clone(),
            display_name: auth.user.display_name.clone(),
            role: role.as_str().to_owned(),
            organisation: state.policy.organisation.clone(),
        },
        ticket: ticket.trim().to_owned(),
        reason: reason.trim().to_owned(),
        levels,
        allowed,
        source: Some(peer.ip()),
        masks,
        window_required,
        help_request: help_request.as_ref().map(|r| r.id.clone()),
        help_code: help_request.as_ref().map(|r| r.code.clone()),
    };
    let opened = LiveSession::open(
        state.identity.clone(),
        link,
        agent.sessions.clone(),
        request,
        obligations,
        &state.recordings,
    )
    .await;
    if let Some(help) = &help_request {
        match &opened {
            Ok(_) => state.help.picked_up(help, &auth.user.name, Some(peer.ip())),
            Err(_) => state.help.put_back(help).await,
        }
    }
    opened.map_err(|e| match e {
        SessionError::AuditUnavailable(_) => (ErrorCode::AuditUnavailable, AuditUnavailable::PUBLIC.to_owned()),
        SessionError::RecordingUnavailable(_) => (ErrorCode::RecordingUnavailable, e.to_string()),
        e => (ErrorCode::Busy, e.to_string()),
    })
}

/// What an operator asks for in a `watch`.
struct SessionAsk<'a> {
    agent_id: &'a str,
    ticket: &'a str,
    reason: &'a str,
    levels: Vec<Level>,
    /// The code of the help request the session answers (R2).
    help_code: Option<&'a str>,
}

/// Starts the operator's session on `asked` (the view open before ends first); the offer is
/// answered once the user consents.
async fn watch(
    state: &AppState,
    auth: &AuthUser,
    peer: SocketAddr,
    viewer_id: u64,
    view: &mut Option<View>,
    asked: SessionAsk<'_>,
    sdp: String,
) -> Reply {
    if !auth.allows(Capability::ViewSessions) {
        return error(ErrorCode::Forbidden, "your roles do not allow starting sessions");
    }
    if let Some(v) = view.take() {
        close_view(viewer_id, v, Some(Event::End { by: sightline_proto::Party::Operator })).await;
    }
    match open_session(state, auth, peer, asked).await {
        Ok(session) => {
            let mut status = session.status();
            let current = status.borrow_and_update().clone();
            *view = Some(View { session, seat: Seat::Operator, status, pending_sdp: Some(sdp), media: None });
            Some(RelayToViewer::Session { status: Box::new(current) })
        }
        Err((code, message)) => error(code, message),
    }
}

/// Answers the viewer's offer with a leg on the agent's fan-out (after consent).
async fn open_media(state: &AppState, viewer_id: u64, name: &str, view: &mut View) -> Result<String, String> {
    let Some(sdp) = view.pending_sdp.take() else { return Err("no offer".into()) };
    let link = view.session.link.clone();
    let (ended_tx, ended) = mpsc::channel(1);
    link.add_viewer(viewer_id, ended_tx);
    match state.hub.media.add_subscriber(&sdp, link.fanout.clone()).await {
        Ok((subscriber, answer)) => {
            let channel_task = tokio::spawn(serve_channel(
                subscriber.peer(),
                view.session.clone(),
                view.seat,
                name.to_owned(),
                view.session.chat(),
            ));
            tracing::info!(viewer_id, agent = %link.info.agent_id, seat = ?view.seat, "view opened");
            view.media = Some(ViewMedia { subscriber, channel_task, ended });
            Ok(answer)
        }
        Err(e) => {
            link.remove_viewer(viewer_id).await;
            Err(e.to_string())
        }
    }
}

/// Serves a viewer's `session` data channel: input from the operator goes through the session's
/// gate; an observer's input is dropped and counted (observers carry no input, R21); chat goes
/// both ways.
async fn serve_channel(
    peer: Arc<Peer>,
    session: Arc<LiveSession>,
    seat: Seat,
    name: String,
    mut chat: broadcast::Receiver<(String, String)>,
) {
    let Some(channel) = peer.next_data_channel().await else { return };
    if channel.label().await.ok().as_deref() != Some(LABEL) {
        tracing::warn!(session = %session.id, "viewer opened an unexpected data channel");
        return;
    }
    let session_id = session.id.clone();
    let send_chat = |channel: DataChannel, from: String, text: String| {
        let session_id = session_id.clone();
        async move {
            if let Err(e) = channel.send(&sightline_proto::channel::encode(&ChannelMessage::Chat { from, text })).await
            {
                tracing::warn!(session = %session_id, error = %e, "a chat line could not be passed to a viewer");
            }
        }
    };
    loop {
        tokio::select! {
            event = channel.recv() => {
                let Some(event) = event else { break };
                let ChannelEvent::Text(text) = event else { continue };
                match (sightline_proto::channel::decode(&text), seat) {
                    (Ok(ChannelMessage::Input { input }), Seat::Operator) => {
                        session.input(input);
                    }
                    (Ok(ChannelMessage::Input { .. }), Seat::Observer) => session.drop_input(),
                    (Ok(ChannelMessage::Chat { text, .. }), _) => session.operator_chat(&name, &text),
                    // Only the endpoint seals its own media.
                    (Ok(ChannelMessage::MediaSeal { .. }), _) => {
                        tracing::warn!(session = %session.id, "viewer sent a media seal; ignored");
                    }
                    (Err(e), _) => tracing::debug!(session = %session.id, error = %e, "bad data channel message from viewer"),
                }
            }
            line = chat.recv() => match line {
                Ok((from, text)) => send_chat(channel.clone(), from, text).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Never silently: the viewer learns that lines are missing here.
                    let notice = format!("{missed} chat lines came too fast to be shown here");
                    send_chat(channel.clone(), "relay".into(), notice).await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}

/// Leaves a view: media closed; for the operator the session ends with `end` (if still running),
/// for an observer the session is told it left.
async fn close_view(viewer_id: u64, view: View, end: Option<Event>) {
    if let Some(media) = view.media {
        media.channel_task.abort();
        media.subscriber.close().await;
        view.session.link.remove_viewer(viewer_id).await;
    }
    match view.seat {
        Seat::Observer => view.session.observer_left(viewer_id),
        Seat::Operator => {
            if let Some(event) = end
                && !view.session.is_ended()
            {
                let actor = view.session.request.operator.name.clone();
                view.session.step(event, &actor);
            }
        }
    }
    tracing::info!(viewer_id, agent = %view.session.link.info.agent_id, "view closed");
}

async fn end_socket<S>(tx: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let msg =
        RelayToViewer::Error { code: ErrorCode::SessionEnded, message: "your session ended; sign in again".into() };
    send_within(tx, Message::Text(encode(&msg).into())).await;
    crate::sockets::wire::close_within(tx).await;
}
