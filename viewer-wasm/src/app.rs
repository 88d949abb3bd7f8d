//! The viewer's components: the page router (enrolment link, sign-in, signed-in home), relay
//! status, the list of online agents, the view of one agent, and the admin area.

use leptos::prelude::*;
use sightline_proto::channel::{ChannelMessage, Input};
use sightline_proto::{
    AgentInfo, ControlAction, ErrorCode, HelpQueueEntry, Level, RelayToViewer, SessionPhase, SessionStatus,
    SessionSummary, ViewEndReason, ViewerToRelay, levels_text,
};
use web_sys::{MediaStream, RtcDataChannel, RtcPeerConnection, RtcPeerConnectionState};

use crate::admin::AdminView;
use crate::auth::{self, EnrolForm, LoginForm, Me, SsoPasskey};
use crate::help::HelpQueue;
use crate::input;
use crate::media::{self, MediaEvent};
use crate::session_words::{self as words, RecordingIndicator};
use crate::signaling::{RelayState, Signaling};

/// What the page shows.
#[derive(Debug, Clone, PartialEq)]
enum Page {
    Loading,
    Enrol(String),
    /// Back from the identity provider: the passkey step.
    SsoPasskey,
    SignIn(Option<String>),
    Home(Me),
}

fn enrolment_token_from_hash() -> Option<String> {
    let hash = window().location().hash().ok()?;
    hash.strip_prefix("#/enrol/").map(str::to_owned).filter(|t| !t.is_empty())
}

/// The local time now, as a chat line shows it (HH:MM:SS).
fn clock_now() -> String {
    let now = js_sys::Date::new_0();
    format!("{:02}:{:02}:{:02}", now.get_hours(), now.get_minutes(), now.get_seconds())
}

#[component]
pub fn App() -> impl IntoView {
    let page = RwSignal::new(Page::Loading);
    let load_me = move |notice: Option<String>| {
        leptos::task::spawn_local(async move {
            match auth::me().await {
                Ok(me) => page.set(Page::Home(me)),
                Err(_) => page.set(Page::SignIn(notice)),
            }
        });
    };
    let hash = window().location().hash().unwrap_or_default();
    match (enrolment_token_from_hash(), crate::sso_words::route(&hash)) {
        (Some(token), _) => page.set(Page::Enrol(token)),
        (None, Some(crate::sso_words::SsoRoute::Continue)) => page.set(Page::SsoPasskey),
        (None, Some(crate::sso_words::SsoRoute::Refused(reason))) => {
            let _ = window().location().set_hash("");
            page.set(Page::SignIn(Some(crate::sso_words::refusal(&reason))));
        }
        (None, None) => load_me(None),
    }
    // A link pasted into a tab that is already open changes only the hash: no reload follows,
    // so the page follows the hash itself.
    let follow = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
        if let Some(token) = enrolment_token_from_hash() {
            page.set(Page::Enrol(token));
        }
    });
    let _ =
        window().add_event_listener_with_callback("hashchange", wasm_bindgen::JsCast::unchecked_ref(follow.as_ref()));
    follow.forget();
    let signed_in = Callback::new(move |()| {
        let _ = window().location().set_hash("");
        load_me(None);
    });
    // Once on the sign-in form, a late report that the session ended (the socket of the page that
    // was left, still reconnecting) changes nothing: the form being typed into stays as it is.
    let session_ended = Callback::new(move |why: String| {
        if !matches!(page.get_untracked(), Page::SignIn(_)) {
            page.set(Page::SignIn(Some(why)));
        }
    });
    keep_session_alive(session_ended, move || matches!(page.get_untracked(), Page::Home(_)));

    view! {
        {move || match page.get() {
            Page::Loading => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Page::Enrol(token) => view! { <Shell me=None on_logout=session_ended><EnrolForm token on_done=signed_in/></Shell> }.into_any(),
            Page::SsoPasskey => view! { <Shell me=None on_logout=session_ended><SsoPasskey on_done=signed_in on_failed=session_ended/></Shell> }.into_any(),
            Page::SignIn(notice) => view! { <Shell me=None on_logout=session_ended><LoginForm on_done=signed_in notice=notice.unwrap_or_default()/></Shell> }.into_any(),
            Page::Home(me) => view! { <Home me on_session_ended=session_ended/> }.into_any(),
        }}
    }
}

/// Renews the session while its user is active (pointer or keyboard within the activity window)
/// and lets it lapse otherwise, on the schedule of `core::renewal`, which works for any token
/// lifetime the relay allows.
fn keep_session_alive(on_ended: Callback<String>, signed_in: impl Fn() -> bool + 'static) {
    use sightline_core::renewal;
    use std::cell::Cell;
    use std::rc::Rc;
    let last_input = Rc::new(Cell::new(js_sys::Date::now()));
    for event in ["pointerdown", "keydown", "pointermove"] {
        let last = last_input.clone();
        let handler = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || last.set(js_sys::Date::now()));
        let _ = window().add_event_listener_with_callback(event, wasm_bindgen::JsCast::unchecked_ref(handler.as_ref()));
        handler.forget();
    }
    // Until the relay says otherwise: ask soon, and assume the longest window.
    let due = Rc::new(Cell::new(0u64));
    let window_ms = Rc::new(Cell::new(renewal::MAX_ACTIVITY_WINDOW_MS));
    let tick = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
        let now = js_sys::Date::now() as u64;
        let active = now.saturating_sub(last_input.get() as u64) < window_ms.get();
        if !signed_in() || !active || now < due.get() {
            return;
        }
        due.set(now + renewal::MIN_INTERVAL_MS);
        let (due, window_ms) = (due.clone(), window_ms.clone());
        leptos::task::spawn_local(async move {
            let result: Result<serde_json::Value, _> =
                crate::http::post("/api/session/refresh", &serde_json::json!({})).await;
            match result {
                Ok(v) => {
                    let expires_ms = v["session_expires"].as_u64().unwrap_or(0) * 1000;
                    due.set(renewal::next_refresh_ms(js_sys::Date::now() as u64, expires_ms));
                    if let Some(ttl) = v["token_ttl_s"].as_u64() {
                        window_ms.set(renewal::activity_window_ms(ttl));
                    }
                }
                Err(e) if e.status == 401 => on_ended.run("Your session ended. Sign in again.".into()),
                Err(_) => {}
            }
        });
    });
    let _ = window().set_interval_with_callback_and_timeout_and_arguments_0(
        wasm_bindgen::JsCast::unchecked_ref(tick.as_ref()),
        renewal::MIN_INTERVAL_MS as i32,
    );
    tick.forget();
}

#[component]
fn Shell(me: Option<Me>, on_logout: Callback<String>, children: Children) -> impl IntoView {
    let logout = move |_| {
        leptos::task::spawn_local(async move {
            match auth::logout().await {
                // The provider signs the person out too, then sends the browser back here.
                Some(provider) => {
                    let _ = window().location().assign(&provider);
                }
                None => on_logout.run("Signed out.".into()),
            }
        });
    };
    view! {
        <header class="topbar">
            <h1>"Sightline"</h1>
            {me.map(|me| view! {
                <span class="who" data-testid="signed-in-as">{format!("{} ({})", me.user.name, me.user.roles.join(", "))}</span>
                <button on:click=logout data-testid="logout">"Sign out"</button>
            })}
        </header>
        {children()}
    }
}

#[component]
fn Home(me: Me, on_session_ended: Callback<String>) -> impl IntoView {
    let can_view = me.can("view_sessions") || me.can("observe_sessions") || me.can("approve_elevation");
    let can_admin = me.can("administer");
    let can_audit = me.can("audit") || can_admin;
    // Recordings are for auditors only (R29): an admin runs the system but does not watch it.
    let can_watch_recordings = me.can("audit");
    let me_for_sessions = me.clone();
    let tab = RwSignal::new(if can_view {
        "sessions"
    } else if can_admin {
        "admin"
    } else if can_audit {
        "audit"
    } else {
        "none"
    });
    view! {
        <Shell me=Some(me) on_logout=on_session_ended>
            <nav class="tabs">
                {can_view.then(|| view! { <button on:click=move |_| tab.set("sessions") data-testid="tab-sessions" aria-current=move || (tab.get() == "sessions").then_some("page")>"Sessions"</button> })}
                {can_admin.then(|| view! { <button on:click=move |_| tab.set("admin") data-testid="tab-admin" aria-current=move || (tab.get() == "admin").then_some("page")>"Admin"</button> })}
                {can_audit.then(|| view! { <button on:click=move |_| tab.set("audit") data-testid="tab-audit" aria-current=move || (tab.get() == "audit").then_some("page")>"Audit"</button> })}
                {can_watch_recordings.then(|| view! { <button on:click=move |_| tab.set("recordings") data-testid="tab-recordings" aria-current=move || (tab.get() == "recordings").then_some("page")>"Recordings"</button> })}
                <button on:click=move |_| tab.set("sign-ins") data-testid="tab-sign-ins" aria-current=move || (tab.get() == "sign-ins").then_some("page")>"Your sign-ins"</button>
            </nav>
            {move || match tab.get() {
                "sessions" => view! { <Sessions me=me_for_sessions.clone() on_session_ended/> }.into_any(),
                "admin" => view! { <AdminView/> }.into_any(),
                "audit" => view! { <crate::audit::AuditView/> }.into_any(),
                "recordings" => view! { <crate::recordings::RecordingsView/> }.into_any(),
                "sign-ins" => view! { <crate::own_sessions::OwnSessions on_session_ended/> }.into_any(),
                _ => view! { <p class="muted" data-testid="no-access">"Your roles give you no area here yet."</p> }.into_any(),
            }}
        </Shell>
    }
}

/// A session taken up again after its relay node was lost (R43).
#[derive(Debug, Clone)]
struct Moving {
    session_id: String,
    /// The view was an observer's: it observes again.
    observing: bool,
    /// Until when (Unix ms) the view keeps trying.
    until_ms: f64,
    /// An offer was sent and not yet answered: no other is sent meanwhile (a second would
    /// take the place of the first, and its answer would not fit).
    asked: bool,
}

/// How often a moving view offers to take its session up again.
const REJOIN_EVERY_MS: u64 = 500;
/// How long a view waits for its session to move: the endpoint's grace (`RESUME_GRACE_MS`) and
/// a little.
const MOVE_WITHIN_MS: f64 = (sightline_core::handover::RESUME_GRACE_MS + 3_000) as f64;

/// Where the open view stands, as shown to the operator.
#[derive(Debug, Clone, PartialEq)]
enum ViewState {
    /// Nothing open.
    Idle,
    /// Request sent, waiting for the relay.
    Negotiating,
    /// The user at the endpoint is being asked.
    AwaitingConsent,
    /// Answer applied, media connecting.
    Connecting,
    /// Media connected.
    Live,
    /// The relay node that ran the session was lost: the picture stands still while the session
    /// moves to another node, and the view takes it up again there (R43).
    Moving,
    /// The view ended; the message says why.
    Ended(String),
}

impl ViewState {
    fn label(&self) -> String {
        match self {
            ViewState::Idle => "idle".into(),
            ViewState::Negotiating => "negotiating".into(),
            ViewState::AwaitingConsent => "awaiting consent".into(),
            ViewState::Connecting => "connecting".into(),
            ViewState::Live => "live".into(),
            ViewState::Moving => "the relay node was lost: moving the session to another node".into(),
            ViewState::Ended(why) => format!("ended: {why}"),
        }
    }

    fn key(&self) -> String {
        match self {
            ViewState::Ended(_) => "ended".into(),
            ViewState::AwaitingConsent => "awaiting-consent".into(),
            ViewState::Moving => "moving".into(),
            other => other.label(),
        }
    }
}

fn end_reason_text(reason: ViewEndReason) -> &'static str {
    match reason {
        ViewEndReason::AgentGone => "the agent went offline",
        ViewEndReason::PublishFailed => "the agent could not capture its screen",
        ViewEndReason::MediaFailed => "the relay could not set up media with the agent",
        ViewEndReason::NodeLost => "the relay node that ran the session was lost",
    }
}

fn error_text(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::UnknownAgent => format!("agent is not online ({message})"),
        ErrorCode::NodeUnreachable => format!("the relay node of that endpoint cannot be reached ({message})"),
        _ => message.to_owned(),
    }
}

fn phase_key(phase: SessionPhase) -> &'static str {
    match phase {
        SessionPhase::AwaitingConsent => "awaiting_consent",
        SessionPhase::Active => "active",
        SessionPhase::Paused => "paused",
        SessionPhase::Ended => "ended",
    }
}

#[component]
fn Sessions(me: Me, on_session_ended: Callback<String>) -> impl IntoView {
    let can_start = me.can("view_sessions");
    let can_observe = me.can("observe_sessions");
    let can_approve = me.can("approve_elevation");
    let (agents, set_agents) = signal(Vec::<AgentInfo>::new());
    let (running, set_running) = signal(Vec::<SessionSummary>::new());
    let (help_requests, set_help_requests) = signal(Vec::<HelpQueueEntry>::new());
    let reasons = RwSignal::new(Vec::<String>::new());
    // The TURN servers and this connection's credentials, renewed by the relay (R42).
    let ice_servers = StoredValue::new(Vec::<sightline_proto::IceServer>::new());
    // Every session names its ticket and a catalog reason (R4); the relay enforces it.
    let ticket = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    // R20: view and chat by default; the operator asks for control on purpose.
    let want_chat = RwSignal::new(true);
    let want_control = RwSignal::new(false);
    let want_clipboard = RwSignal::new(false);
    let want_files = RwSignal::new(false);
    let (view_state, set_view_state) = signal(ViewState::Idle);
    let (watching, set_watching) = signal(None::<String>);
    let status = RwSignal::new(None::<SessionStatus>);
    // Chat lines with the local time they arrived (from, text, HH:MM:SS).
    let chat = RwSignal::new(Vec::<(String, String, String)>::new());
    // Whether the picture area shows frames of this view (a `playing` event since it opened).
    let showing_frames = RwSignal::new(false);
    let draft = RwSignal::new(String::new());
    // Chat is offered only once the data channel is open: a line typed before would be lost.
    let chat_ready = RwSignal::new(false);
    let notice = RwSignal::new(String::new());
    let stream = RwSignal::new_local(None::<MediaStream>);
    let pc = StoredValue::new_local(None::<RtcPeerConnection>);
    let dc = StoredValue::new_local(None::<RtcDataChannel>);
    // The session being taken up again after its node was lost, until when (R43).
    let moving = StoredValue::new(None::<Moving>);
    // How many relay nodes the service has: a session moves only where there are others (R43).
    let nodes = StoredValue::new(0usize);
    let start_moving = StoredValue::new_local(None::<std::rc::Rc<dyn Fn(String)>>);
    let begin_moving = move |session_id: String| {
        if let Some(start) = start_moving.get_value() {
            start(session_id);
        }
    };

    // A senior's approval is a critical action: the relay asks for a passkey step-up (R14), and
    // the approval names the levels shown, so it cannot apply to a different request.
    let approve = move |session_id: String, levels: Vec<Level>| {
        leptos::task::spawn_local(async move {
            let path = format!("/api/sessions/{session_id}/approve-elevation");
            let body = serde_json::json!({ "levels": levels });
            let result = auth::with_step_up(|| crate::http::post::<_, serde_json::Value>(&path, &body)).await;
            notice.set(match result {
                Ok(_) => format!("approved {}", levels_text(&levels)),
                Err(e) => format!("approval refused: {e}"),
            });
        });
    };

    let close_pc = move || {
        if let Some(old) = pc.try_get_value().flatten() {
            media::close(&old);
        }
        if let Some(old) = dc.try_get_value().flatten() {
            old.close();
        }
        pc.set_value(None);
        dc.set_value(None);
        stream.set(None);
    };

    let on_message = move |msg: RelayToViewer| match msg {
        RelayToViewer::Agents { agents } => set_agents.set(agents),
        RelayToViewer::Sessions { sessions } => set_running.set(sessions),
        RelayToViewer::HelpRequests { requests } => set_help_requests.set(requests),
        // No reason is chosen for the operator: the record must say what they chose (R4).
        RelayToViewer::Reasons { reasons: list } => reasons.set(list),
        RelayToViewer::IceServers { servers, .. } => {
            // A running connection takes the new credentials for its next gathering.
            if let Some(conn) = pc.try_get_value().flatten()
                && let Err(e) = conn.set_configuration_with_configuration(&media::configuration(&servers))
            {
                leptos::logging::warn!("cannot renew TURN credentials: {e:?}");
            }
            ice_servers.set_value(servers);
        }
        RelayToViewer::Session { status: s } => {
            if s.phase != SessionPhase::Ended {
                // Taken up again where it runs now: the answer to the offer follows.
                moving.set_value(None);
            }
            match s.phase {
                SessionPhase::AwaitingConsent => set_view_state.set(ViewState::AwaitingConsent),
                SessionPhase::Ended => {
                    close_pc();
                    let why = s.end_reason.as_ref().map(|r| r.describe()).unwrap_or_else(|| "ended".into());
                    set_view_state.set(ViewState::Ended(why));
                }
                SessionPhase::Active | SessionPhase::Paused => {}
            }
            status.set(Some(*s));
        }
        RelayToViewer::WatchAnswer { sdp } => {
            let Some(conn) = pc.try_get_value().flatten() else { return };
            set_view_state.set(ViewState::Connecting);
            leptos::task::spawn_local(async move {
                if let Err(e) = media::accept_answer(&conn, &sdp).await {
                    set_view_state.set(ViewState::Ended(format!("media negotiation failed: {e:?}")));
                }
            });
        }
        RelayToViewer::ViewEnded { reason } => {
            moving.set_value(None);
            close_pc();
            set_view_state.set(ViewState::Ended(end_reason_text(reason).into()));
        }
        RelayToViewer::SessionMoving { session_id } => begin_moving(session_id),
        RelayToViewer::Nodes { nodes: list } => nodes.set_value(list.len()),
        RelayToViewer::Error { code: ErrorCode::SessionEnded, message } => {
            close_pc();
            on_session_ended.run(message);
        }
        RelayToViewer::Error { code, message } => {
            if matches!(view_state.get_untracked(), ViewState::Negotiating | ViewState::Connecting) {
                close_pc();
                set_view_state.set(ViewState::Ended(error_text(code, &message)));
            } else {
                leptos::logging::warn!("relay error: {message}");
                // Not there yet: the moving view asks again.
                moving.update_value(|m| {
                    if let Some(m) = m {
                        m.asked = false;
                    }
                });
                notice.set(message);
            }
        }
    };
    let on_lost = move || {
        // A relay that restarted may no longer know this session: ask, and go to sign-in if so.
        leptos::task::spawn_local(async move {
            if let Err(e) = auth::me().await
                && e.status == 401
            {
                on_session_ended.run("Your session ended. Sign in again.".into());
            }
        });
        set_agents.set(Vec::new());
        set_running.set(Vec::new());
        set_help_requests.set(Vec::new());
        // A session that ran moves to another node when its node was lost (R43): the view
        // takes it up again once this socket is back, through whichever node it reaches.
        moving.update_value(|m| {
            if let Some(m) = m {
                m.asked = false;
            }
        });
        let running = status.with_untracked(|s| {
            s.as_ref()
                .filter(|s| matches!(s.phase, SessionPhase::Active | SessionPhase::Paused))
                .map(|s| s.session_id.clone())
        });
        // With this node the only one, nothing takes the session over: it ended with the node.
        let running = running.filter(|_| nodes.get_value() > 1);
        match (view_state.get_untracked(), running) {
            (ViewState::Idle | ViewState::Ended(_), _) => {}
            (ViewState::Live | ViewState::Connecting | ViewState::Moving, Some(session_id)) => begin_moving(session_id),
            _ => {
                close_pc();
                set_view_state.set(ViewState::Ended("the relay connection was lost".into()));
            }
        }
    };
    let signaling = Signaling::connect(on_message, on_lost);

    // Opens a peer connection and sends what `request` builds from its offer. Taking a moved
    // session up again (`label` None) keeps the view as it is: the last picture stays until
    // the new one comes, and the chat goes on.
    let open = move |label: Option<String>, request: std::rc::Rc<dyn Fn(String) -> ViewerToRelay>| {
        match label {
            Some(label) => {
                close_pc();
                status.set(None);
                chat.set(Vec::new());
                showing_frames.set(false);
                notice.set(String::new());
                set_watching.set(Some(label));
                set_view_state.set(ViewState::Negotiating);
            }
            None => {
                if let Some(old) = pc.try_get_value().flatten() {
                    media::close(&old);
                }
                pc.set_value(None);
                dc.set_value(None);
            }
        }
        chat_ready.set(false);
        leptos::task::spawn_local(async move {
            let on_event = move |event: MediaEvent| match event {
                MediaEvent::Stream(s) => stream.set(Some(s)),
                MediaEvent::Chat { from, text } => chat.update(|c| c.push((from, text, clock_now()))),
                MediaEvent::ChannelOpen => chat_ready.set(true),
                MediaEvent::ChannelClosed => chat_ready.set(false),
                // While the session moves, the connection to the lost node dies: that is no news.
                MediaEvent::State(_) if moving.with_value(Option::is_some) => {}
                MediaEvent::State(state) => match state {
                    RtcPeerConnectionState::Connected => set_view_state.set(ViewState::Live),
                    RtcPeerConnectionState::Failed => {
                        set_view_state.set(ViewState::Ended("media connection failed".into()))
                    }
                    RtcPeerConnectionState::Disconnected => set_view_state.set(ViewState::Connecting),
                    _ => {}
                },
            };
            match media::offer(&ice_servers.get_value(), on_event).await {
                Ok((conn, channel, sdp)) => {
                    pc.set_value(Some(conn));
                    dc.set_value(Some(channel));
                    // A rejoin not sent is tried again by the moving view's timer.
                    if !signaling.send(&request(sdp)) && moving.with_value(Option::is_none) {
                        close_pc();
                        set_view_state.set(ViewState::Ended("the relay is not connected".into()));
                    }
                }
                Err(e) => set_view_state.set(ViewState::Ended(format!("cannot create a peer connection: {e:?}"))),
            }
        });
    };
    // Every session names a ticket and a catalog reason (R4): said here, before anything is sent,
    // rather than as the end of a session that never began.
    let request_error = RwSignal::new(String::new());
    let request_ready = move || {
        let problem = if ticket.get_untracked().trim().is_empty() {
            "Enter the ticket or request ID first: every session names one."
        } else if reason.get_untracked().is_empty() {
            "Choose the reason for the session first."
        } else {
            ""
        };
        request_error.set(problem.to_owned());
        problem.is_empty()
    };
    // The levels the operator ticked (view always).
    let wanted = move || {
        let mut levels = vec![Level::View];
        if want_chat.get_untracked() {
            levels.push(Level::Chat);
        }
        if want_control.get_untracked() {
            levels.push(Level::Control);
        }
        if want_clipboard.get_untracked() {
            levels.push(Level::Clipboard);
        }
        if want_files.get_untracked() {
            levels.push(Level::FileTransfer);
        }
        levels
    };
    let watch = move |agent: AgentInfo| {
        if !request_ready() {
            return;
        }
        let (ticket, reason, levels) = (ticket.get_untracked(), reason.get_untracked(), wanted());
        open(
            Some(agent.name),
            std::rc::Rc::new(move |sdp| ViewerToRelay::Watch {
                agent_id: agent.agent_id.clone(),
                sdp,
                ticket: ticket.clone(),
                reason: reason.clone(),
                levels: levels.clone(),
                help_code: None,
            }),
        );
    };
    // The code the caller read out: the relay finds their endpoint from it (the queue has no codes).
    let take_help = Callback::new(move |code: String| {
        if !request_ready() {
            return false;
        }
        let (ticket, reason, levels) = (ticket.get_untracked(), reason.get_untracked(), wanted());
        open(
            Some(format!("help request {}", sightline_core::help::spoken(&code))),
            std::rc::Rc::new(move |sdp| ViewerToRelay::WatchHelp {
                help_code: code.clone(),
                sdp,
                ticket: ticket.clone(),
                reason: reason.clone(),
                levels: levels.clone(),
            }),
        );
        true
    });
    let observe = move |s: SessionSummary| {
        let session_id = s.session_id.clone();
        open(
            Some(format!("{} (observing {})", s.agent_name, s.operator)),
            std::rc::Rc::new(move |sdp| ViewerToRelay::Observe { session_id: session_id.clone(), sdp }),
        );
    };
    // Takes the moved session up again: an offer every `REJOIN_EVERY_MS` until the session
    // answers from its new node, or `MOVE_WITHIN_MS` passed (R43).
    let rejoin = StoredValue::new_local(None::<std::rc::Rc<dyn Fn()>>);
    rejoin.set_value(Some(std::rc::Rc::new(move || {
        let Some(m) = moving.get_value() else { return };
        if js_sys::Date::now() > m.until_ms {
            moving.set_value(None);
            close_pc();
            set_view_state.set(ViewState::Ended(
                "the relay node that ran the session was lost, and the session did not move to another node".into(),
            ));
            return;
        }
        if !m.asked && signaling.state.get_untracked() == crate::signaling::RelayState::Online {
            moving.update_value(|m| {
                if let Some(m) = m {
                    m.asked = true;
                }
            });
            let session_id = m.session_id.clone();
            let request: std::rc::Rc<dyn Fn(String) -> ViewerToRelay> = if m.observing {
                std::rc::Rc::new(move |sdp| ViewerToRelay::Observe { session_id: session_id.clone(), sdp })
            } else {
                std::rc::Rc::new(move |sdp| ViewerToRelay::Rejoin { session_id: session_id.clone(), sdp })
            };
            open(None, request);
        }
        leptos::prelude::set_timeout(
            move || {
                if let Some(again) = rejoin.try_get_value().flatten() {
                    again();
                }
            },
            std::time::Duration::from_millis(REJOIN_EVERY_MS),
        );
    })));
    start_moving.set_value(Some(std::rc::Rc::new(move |session_id: String| {
        let already = moving.with_value(|m| m.as_ref().is_some_and(|m| m.session_id == session_id));
        set_view_state.set(ViewState::Moving);
        if already {
            return;
        }
        let observing = status.with_untracked(|s| s.as_ref().is_some_and(|s| s.observing));
        moving.set_value(Some(Moving {
            session_id,
            observing,
            until_ms: js_sys::Date::now() + MOVE_WITHIN_MS,
            asked: false,
        }));
        if let Some(first) = rejoin.get_value() {
            first();
        }
    })));
    let stop = move |_| {
        moving.set_value(None);
        // After the end the relay holds no view: asking it to close one only earns an error.
        if !matches!(view_state.get_untracked(), ViewState::Ended(_) | ViewState::Idle) {
            signaling.send(&ViewerToRelay::Unwatch);
        }
        notice.set(String::new());
        close_pc();
        set_watching.set(None);
        status.set(None);
        set_view_state.set(ViewState::Idle);
    };
    let control = move |action: ControlAction| {
        signaling.send(&ViewerToRelay::Control { action });
    };
    let observing = move || status.with(|s| s.as_ref().is_some_and(|s| s.observing));
    let send_input = move |input: Option<Input>| {
        // Observers send nothing; for the operator the relay and the agent decide.
        if observing() {
            return;
        }
        if let (Some(input), Some(channel)) = (input, dc.try_get_value().flatten()) {
            media::send(&channel, &ChannelMessage::Input { input });
        }
    };
    let control_granted = move || status.with(|s| s.as_ref().is_some_and(|s| s.granted.contains(&Level::Control)));
    let held = StoredValue::new(crate::keyboard::HeldKeys::default());
    let send_key = move |key: Option<Input>| {
        if let Some(key) = &key {
            held.update_value(|h| h.note(key));
        }
        send_input(key);
    };
    // To the controls after the picture: the chat box, or else End session.
    let leave_picture = move || {
        let document = leptos::prelude::document();
        let next = ["input[name=\"chat\"]", "[data-testid=\"end-session\"]"]
            .iter()
            .find_map(|selector| document.query_selector(selector).ok().flatten());
        match next.and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok()) {
            Some(next) => {
                let _ = next.focus();
            }
            None => {
                if let Some(active) = document.active_element()
                    && let Ok(active) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(active)
                {
                    let _ = active.blur();
                }
            }
        }
    };
    let send_chat = move || {
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        let sent = dc.try_get_value().flatten().is_some_and(|channel| {
            media::send(&channel, &ChannelMessage::Chat { from: String::new(), text: text.clone() })
        });
        if sent {
            draft.set(String::new());
        } else {
            // Never silently: the line stays in the box, and the log says it did not go.
            chat.update(|c| {
                c.push(("not sent".into(), format!("{text} (the session channel is not open)"), clock_now()))
            });
        }
    };

    let video_ref = NodeRef::<leptos::html::Video>::new();
    Effect::new(move |_| {
        let s = stream.get();
        if let Some(video) = video_ref.get() {
            video.set_src_object(s.as_ref());
            if s.is_some() {
                let _ = video.play();
            }
        }
    });
    let with_video =
        move |f: &dyn Fn(&web_sys::HtmlVideoElement) -> Option<Input>| video_ref.get_untracked().and_then(|v| f(&v));

    let relay_label = move || match signaling.state.get() {
        RelayState::Connecting => "connecting to relay…",
        RelayState::Online => "relay online",
        RelayState::Lost => "relay unreachable — retrying",
    };
    // The user granted chat (R20): without it the relay and the agent refuse every line.
    let chat_granted = move || status.with(|s| s.as_ref().is_some_and(|s| s.granted.contains(&Level::Chat)));
    let granted_text = move || status.with(|s| s.as_ref().map(|s| levels_text(&s.granted)).unwrap_or_default());
    let phase = move || status.with(|s| s.as_ref().map(|s| phase_key(s.phase)).unwrap_or("none"));
    let phase_text = move || status.with(|s| s.as_ref().map(words::phase_words).unwrap_or_default());
    // R9: what the relay's recorder confirms while frames flow, never what the policy asks for.
    let indicator = move || status.with(|s| s.as_ref().and_then(RecordingIndicator::of));
    let offers = move |f: fn(&SessionStatus) -> bool| status.with(|s| s.as_ref().is_some_and(f));
    let paused = move || status.with(|s| s.as_ref().is_some_and(|s| s.phase == SessionPhase::Paused));
    // R3, R16: the end of the hours or window the session runs in, once the relay warns of it.
    let ending = move || {
        status.with(|s| {
            s.as_ref()
                .filter(|s| s.end_reason.is_none())
                .and_then(|s| s.ending)
                .map(|e| format!("Ends at {} UTC: {}", crate::recordings::utc(e.at_ms), e.because.describe()))
        })
    };
    let is_operator_live = move || {
        status.with(|s| {
            s.as_ref().is_some_and(|s| !s.observing && matches!(s.phase, SessionPhase::Active | SessionPhase::Paused))
        })
    };

    view! {
        <p class="relay-state" data-testid="relay-state" data-state=move || format!("{:?}", signaling.state.get()).to_lowercase()>
            {relay_label}
        </p>
        <main class="layout">
            <section class="agents">
                {can_start.then(|| view! {
                    <h2>"Session request"</h2>
                    <div class="request" data-testid="session-request">
                        <label>"Ticket / request ID " <input name="ticket" placeholder="INC-12345" bind:value=ticket/></label>
                        <label>"Reason "
                            <select name="reason" on:change=move |ev| reason.set(event_target_value(&ev))>
                                <option value="" disabled=true selected=move || reason.get().is_empty()>"Choose a reason…"</option>
                                <For each=move || reasons.get() key=|r| r.clone() let(r)>
                                    <option value=r.clone() selected=move || reason.get() == r>{r.clone()}</option>
                                </For>
                            </select>
                        </label>
                        <fieldset class="levels">
                            <legend>"Ask for"</legend>
                            <label><input type="checkbox" checked=true disabled=true/>" view"</label>
                            <label><input type="checkbox" name="level-chat" bind:checked=want_chat/>" chat"</label>
                            <label><input type="checkbox" name="level-control" bind:checked=want_control/>" control"</label>
                            <label><input type="checkbox" name="level-clipboard" bind:checked=want_clipboard/>" clipboard"</label>
                            <label><input type="checkbox" name="level-file_transfer" bind:checked=want_files/>" file transfer"</label>
                        </fieldset>
                        <p class="error" role="alert" data-testid="request-error">{move || request_error.get()}</p>
                    </div>
                    <HelpQueue requests=help_requests take=take_help/>
                    <h2>"Online endpoints"</h2>
                    <Show when=move || agents.with(|a| !a.is_empty()) fallback=move || view! {
                        <p class="muted" data-testid="no-agents">
                            {move || if signaling.state.get() == RelayState::Online { "No endpoint is online." } else { "Connecting to the relay…" }}
                        </p>
                    }>
                        <ul>
                            <For each=move || agents.get() key=|a| (a.agent_id.clone(), a.node.clone()) let(agent)>
                                <li data-testid="agent-row" data-agent-id=agent.agent_id.clone()>
                                    <span class="agent-name">{agent.name.clone()}</span>
                                    <span class="muted">{format!(" {} · {} · {}×{}{}", agent.user, agent.segment, agent.width, agent.height, if agent.unattended { " · unattended" } else { "" })}</span>
                                    <span class="muted" data-testid="agent-node">{format!(" · node {}", agent.node)}</span>
                                    <button on:click={
                                        let agent = agent.clone();
                                        move |_| watch(agent.clone())
                                    }>"View"</button>
                                </li>
                            </For>
                        </ul>
                    </Show>
                })}
                {(can_observe || can_approve).then(|| view! {
                    <h2>"Running sessions"</h2>
                    <Show when=move || running.with(|r| !r.is_empty()) fallback=|| view! { <p class="muted" data-testid="no-sessions">"No session is running."</p> }>
                        <ul>
                            <For each=move || running.get() key=|s| (s.session_id.clone(), s.pending_elevation.clone(), s.observers.clone(), s.phase) let(s)>
                                <li data-testid="session-row" data-session-id=s.session_id.clone()>
                                    <span>{format!("{} · {} · {} ({}) · {} · node {}", s.agent_name, s.operator, s.ticket, s.reason, words::summary_phase_words(s.phase), s.node)}</span>
                                    {(can_observe && s.phase != SessionPhase::Ended).then(|| {
                                        let s = s.clone();
                                        view! { <button data-testid="observe" on:click=move |_| observe(s.clone())>"Observe"</button> }
                                    })}
                                    {(can_approve && s.needs_senior && !s.pending_elevation.is_empty()).then(|| {
                                        let (id, levels) = (s.session_id.clone(), s.pending_elevation.clone());
                                        let what = levels_text(&s.pending_elevation);
                                        view! {
                                            <button data-testid="approve" on:click=move |_| approve(id.clone(), levels.clone())>
                                                {format!("Approve {what}")}
                                            </button>
                                        }
                                    })}
                                </li>
                            </For>
                        </ul>
                    </Show>
                })}
            </section>
            <section class="view">
                <div class="view-bar">
                    <span data-testid="view-agent">{move || watching.get().unwrap_or_default()}</span>
                    <span class="view-state" data-testid="view-state" data-state=move || view_state.get().key()>
                        {move || match view_state.get() {
                            // A paused session's picture stands still: the connection is up, the view is not live.
                            ViewState::Live if paused() => "picture paused".to_owned(),
                            state => state.label(),
                        }}
                    </span>
                    <Show when=move || status.with(|s| s.is_some())>
                        <span class="session-phase" data-testid="session-phase" data-phase=phase>{phase_text}</span>
                        <span data-testid="granted">{move || format!("granted: {}", granted_text())}</span>
                    </Show>
                    <Show when=move || indicator().is_some()>
                        <span class="recording" role="status" data-testid="recording"
                            data-recording=move || indicator().is_some_and(RecordingIndicator::is_recording).to_string()
                            data-indicator=move || format!("{:?}", indicator()).to_lowercase()>
                            {move || indicator().map(RecordingIndicator::words).unwrap_or_default()}
                        </span>
                    </Show>
                    <Show when=move || ending().is_some()>
                        <span class="ending" data-testid="ending">{ending}</span>
                    </Show>
                    <Show when=move || watching.get().is_some()>
                        <button on:click=stop data-testid="close-view">"Close view"</button>
                    </Show>
                </div>
                <Show when=is_operator_live>
                    <div class="session-controls">
                        <Show when=move || offers(words::may_pause)>
                            <button data-testid="pause" on:click=move |_| control(ControlAction::Pause)>"Pause"</button>
                        </Show>
                        <Show when=move || offers(words::may_resume)>
                            <button data-testid="resume" on:click=move |_| control(ControlAction::Resume)>"Resume"</button>
                        </Show>
                        <Show when=move || offers(words::may_request_control)>
                            <button data-testid="elevate" on:click=move |_| { signaling.send(&ViewerToRelay::Elevate { levels: vec![Level::Control] }); }>"Request control"</button>
                        </Show>
                        <button class="danger" data-testid="end-session" on:click=move |_| control(ControlAction::End)>"End session"</button>
                        <span class="muted" data-testid="pending-elevation">{move || status.with(|s| s.as_ref().filter(|s| !s.pending_elevation.is_empty()).map(|s| format!("waiting for: {}", levels_text(&s.pending_elevation))).unwrap_or_default())}</span>
                    </div>
                </Show>
                {move || words::video_hint(status.get().as_ref(), showing_frames.get())
                    .filter(|_| watching.get().is_some() && !matches!(view_state.get(), ViewState::Ended(_)))
                    .map(|hint| view! { <p class="video-hint" data-testid="video-hint" role="status">{hint}</p> })}
                <video node_ref=video_ref id="remote-video" data-testid="remote-video" autoplay=true playsinline=true muted=true tabindex="0"
                    on:playing=move |_| showing_frames.set(true)
                    on:pointermove=move |ev| send_input(with_video(&|v| input::pointer_move(v, &ev)))
                    on:pointerdown=move |ev| {
                        if let Some(v) = video_ref.get_untracked() { let _ = v.focus(); }
                        send_input(with_video(&|v| input::pointer_button(v, &ev, true)))
                    }
                    on:pointerup=move |ev| send_input(with_video(&|v| input::pointer_button(v, &ev, false)))
                    on:contextmenu=move |ev| ev.prevent_default()
                    on:wheel=move |ev| { ev.prevent_default(); send_input(input::wheel(&ev)) }
                    on:keydown=move |ev| match crate::keyboard::route(&ev.key(), ev.shift_key(), control_granted()) {
                        crate::keyboard::KeyRoute::Remote => { ev.prevent_default(); send_key(input::key(&ev, true)) }
                        crate::keyboard::KeyRoute::Page => {}
                        crate::keyboard::KeyRoute::Leave => { ev.prevent_default(); leave_picture() }
                    }
                    on:keyup=move |ev| if crate::keyboard::route(&ev.key(), ev.shift_key(), control_granted()) == crate::keyboard::KeyRoute::Remote {
                        ev.prevent_default();
                        send_key(input::key(&ev, false))
                    }
                    on:blur=move |_| for up in held.try_update_value(|h| h.release()).unwrap_or_default() { send_input(Some(up)) }
                ></video>
                <Show when=move || is_operator_live() && control_granted()>
                    <p class="muted" data-testid="keyboard-hint">"While the picture has the keyboard, every key goes to the remote screen; Shift+Esc leaves it."</p>
                </Show>
                <Show when=move || status.with(|s| s.as_ref().is_some_and(|s| s.phase != SessionPhase::Ended))>
                    <div class="chat">
                        <ul data-testid="chat-log">
                            <For each=move || chat.get().into_iter().enumerate() key=|(i, _)| *i let((_, line))>
                                <li><time class="muted">{line.2.clone()}</time>" "{format!("{}: {}", line.0, line.1)}</li>
                            </For>
                        </ul>
                        <Show when=chat_granted fallback=|| view! { <p class="muted" data-testid="chat-off">"Chat is not granted in this session."</p> }>
                            <input name="chat" placeholder="Message to the user" bind:value=draft
                                on:keydown=move |ev| if ev.key() == "Enter" { send_chat() }/>
                            <button data-testid="chat-send" disabled=move || !chat_ready.get()
                                on:click=move |_| send_chat()>"Send"</button>
                        </Show>
                    </div>
                </Show>
                <p class="notice" data-testid="notice">{move || notice.get()}</p>
            </section>
        </main>
    }
}
