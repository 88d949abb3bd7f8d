//! The viewer's components: the page router (enrolment link, sign-in, signed-in home), relay
//! status, the list of online agents, the view of one agent, and the admin area.

use leptos::prelude::*;
use sightline_proto::{AgentInfo, ErrorCode, RelayToViewer, ViewEndReason, ViewerToRelay};
use web_sys::{MediaStream, RtcPeerConnection, RtcPeerConnectionState};

use crate::admin::AdminView;
use crate::auth::{self, EnrolForm, LoginForm, Me};
use crate::media::{self, MediaEvent};
use crate::signaling::{RelayState, Signaling};

/// What the page shows.
#[derive(Debug, Clone, PartialEq)]
enum Page {
    Loading,
    Enrol(String),
    SignIn(Option<String>),
    Home(Me),
}

fn enrolment_token_from_hash() -> Option<String> {
    let hash = window().location().hash().ok()?;
    hash.strip_prefix("#/enrol/").map(str::to_owned).filter(|t| !t.is_empty())
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
    match enrolment_token_from_hash() {
        Some(token) => page.set(Page::Enrol(token)),
        None => load_me(None),
    }
    let signed_in = Callback::new(move |()| {
        let _ = window().location().set_hash("");
        load_me(None);
    });
    let session_ended = Callback::new(move |why: String| page.set(Page::SignIn(Some(why))));
    keep_session_alive(session_ended);

    view! {
        {move || match page.get() {
            Page::Loading => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Page::Enrol(token) => view! { <Shell me=None on_logout=session_ended><EnrolForm token on_done=signed_in/></Shell> }.into_any(),
            Page::SignIn(notice) => view! { <Shell me=None on_logout=session_ended><LoginForm on_done=signed_in notice=notice.unwrap_or_default()/></Shell> }.into_any(),
            Page::Home(me) => view! { <Home me on_session_ended=session_ended/> }.into_any(),
        }}
    }
}

/// Renews the session while its user is active (pointer or keyboard in the last minutes) and
/// lets it lapse otherwise: the relay ends sessions after 15 minutes idle.
fn keep_session_alive(on_ended: Callback<String>) {
    let last_input = std::rc::Rc::new(std::cell::Cell::new(js_sys::Date::now()));
    for event in ["pointerdown", "keydown", "pointermove"] {
        let last = last_input.clone();
        let handler = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || last.set(js_sys::Date::now()));
        let _ = window().add_event_listener_with_callback(event, wasm_bindgen::JsCast::unchecked_ref(handler.as_ref()));
        handler.forget();
    }
    let tick = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
        // Active in the last 4 minutes: renew. Otherwise let the token run out.
        if js_sys::Date::now() - last_input.get() < 4.0 * 60.0 * 1000.0 {
            leptos::task::spawn_local(async move {
                let result: Result<serde_json::Value, _> =
                    crate::http::post("/api/session/refresh", &serde_json::json!({})).await;
                if let Err(e) = result
                    && e.status == 401
                {
                    on_ended.run("Your session ended. Sign in again.".into());
                }
            });
        }
    });
    let _ = window().set_interval_with_callback_and_timeout_and_arguments_0(
        wasm_bindgen::JsCast::unchecked_ref(tick.as_ref()),
        60_000,
    );
    tick.forget();
}

#[component]
fn Shell(me: Option<Me>, on_logout: Callback<String>, children: Children) -> impl IntoView {
    let logout = move |_| {
        leptos::task::spawn_local(async move {
            auth::logout().await;
            on_logout.run("Signed out.".into());
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
    let can_view = me.can("view_sessions");
    let can_admin = me.can("administer");
    let tab = RwSignal::new(if can_view {
        "sessions"
    } else if can_admin {
        "admin"
    } else {
        "none"
    });
    view! {
        <Shell me=Some(me) on_logout=on_session_ended>
            <nav class="tabs">
                {can_view.then(|| view! { <button on:click=move |_| tab.set("sessions") data-testid="tab-sessions">"Sessions"</button> })}
                {can_admin.then(|| view! { <button on:click=move |_| tab.set("admin") data-testid="tab-admin">"Admin"</button> })}
            </nav>
            {move || match tab.get() {
                "sessions" => view! { <Sessions on_session_ended/> }.into_any(),
                "admin" => view! { <AdminView/> }.into_any(),
                _ => view! { <p class="muted" data-testid="no-access">"Your roles give you no area here yet."</p> }.into_any(),
            }}
        </Shell>
    }
}

/// Where the open view stands, as shown to the operator.
#[derive(Debug, Clone, PartialEq)]
enum ViewState {
    /// Nothing open.
    Idle,
    /// Offer sent, waiting for the relay.
    Negotiating,
    /// Answer applied, media connecting.
    Connecting,
    /// Media connected.
    Live,
    /// The view ended; the message says why.
    Ended(String),
}

impl ViewState {
    fn label(&self) -> String {
        match self {
            ViewState::Idle => "idle".into(),
            ViewState::Negotiating => "negotiating".into(),
            ViewState::Connecting => "connecting".into(),
            ViewState::Live => "live".into(),
            ViewState::Ended(why) => format!("ended: {why}"),
        }
    }
}

fn end_reason_text(reason: ViewEndReason) -> &'static str {
    match reason {
        ViewEndReason::AgentGone => "the agent went offline",
        ViewEndReason::PublishFailed => "the agent could not capture its screen",
        ViewEndReason::MediaFailed => "the relay could not set up media with the agent",
    }
}

fn error_text(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::UnknownAgent => format!("agent is not online ({message})"),
        _ => message.to_owned(),
    }
}

#[component]
fn Sessions(on_session_ended: Callback<String>) -> impl IntoView {
    let (agents, set_agents) = signal(Vec::<AgentInfo>::new());
    let reasons = RwSignal::new(Vec::<String>::new());
    // Every session names its ticket and a catalog reason (R4); the relay enforces it.
    let ticket = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let (view_state, set_view_state) = signal(ViewState::Idle);
    let (watching, set_watching) = signal(None::<AgentInfo>);
    let stream = RwSignal::new_local(None::<MediaStream>);
    let pc = StoredValue::new_local(None::<RtcPeerConnection>);

    let close_pc = move || {
        if let Some(old) = pc.try_get_value().flatten() {
            media::close(&old);
        }
        pc.set_value(None);
        stream.set(None);
    };

    let on_message = move |msg: RelayToViewer| match msg {
        RelayToViewer::Agents { agents } => set_agents.set(agents),
        RelayToViewer::Reasons { reasons: list } => {
            if reason.get_untracked().is_empty() {
                reason.set(list.first().cloned().unwrap_or_default());
            }
            reasons.set(list);
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
            close_pc();
            set_view_state.set(ViewState::Ended(end_reason_text(reason).into()));
        }
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
        if view_state.get_untracked() != ViewState::Idle {
            close_pc();
            set_view_state.set(ViewState::Ended("the relay connection was lost".into()));
        }
    };
    let signaling = Signaling::connect(on_message, on_lost);

    let watch = move |agent: AgentInfo| {
        close_pc();
        set_watching.set(Some(agent.clone()));
        set_view_state.set(ViewState::Negotiating);
        leptos::task::spawn_local(async move {
            let on_event = move |event: MediaEvent| match event {
                MediaEvent::Stream(s) => stream.set(Some(s)),
                MediaEvent::State(state) => match state {
                    RtcPeerConnectionState::Connected => set_view_state.set(ViewState::Live),
                    RtcPeerConnectionState::Failed => {
                        set_view_state.set(ViewState::Ended("media connection failed".into()))
                    }
                    RtcPeerConnectionState::Disconnected => set_view_state.set(ViewState::Connecting),
                    _ => {}
                },
            };
            match media::offer(on_event).await {
                Ok((conn, sdp)) => {
                    pc.set_value(Some(conn));
                    let watch = ViewerToRelay::Watch {
                        agent_id: agent.agent_id,
                        sdp,
                        ticket: ticket.get_untracked(),
                        reason: reason.get_untracked(),
                    };
                    if !signaling.send(&watch) {
                        close_pc();
                        set_view_state.set(ViewState::Ended("the relay is not connected".into()));
                    }
                }
                Err(e) => set_view_state.set(ViewState::Ended(format!("cannot create a peer connection: {e:?}"))),
            }
        });
    };
    let stop = move |_| {
        signaling.send(&ViewerToRelay::Unwatch);
        close_pc();
        set_watching.set(None);
        set_view_state.set(ViewState::Idle);
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

    let relay_label = move || match signaling.state.get() {
        RelayState::Connecting => "connecting to relay…",
        RelayState::Online => "relay online",
        RelayState::Lost => "relay unreachable — retrying",
    };

    view! {
        <p class="relay-state" data-testid="relay-state" data-state=move || format!("{:?}", signaling.state.get()).to_lowercase()>
            {relay_label}
        </p>
        <main class="layout">
            <section class="agents">
                <h2>"Session request"</h2>
                <div class="request" data-testid="session-request">
                    <label>"Ticket / request ID " <input name="ticket" placeholder="INC-12345" bind:value=ticket/></label>
                    <label>"Reason "
                        <select name="reason" on:change=move |ev| reason.set(event_target_value(&ev))>
                            <For each=move || reasons.get() key=|r| r.clone() let(r)>
                                <option value=r.clone() selected=move || reason.get() == r>{r.clone()}</option>
                            </For>
                        </select>
                    </label>
                </div>
                <h2>"Online endpoints"</h2>
                <Show when=move || agents.with(|a| !a.is_empty()) fallback=|| view! { <p class="muted" data-testid="no-agents">"No endpoint is online."</p> }>
                    <ul>
                        <For each=move || agents.get() key=|a| a.agent_id.clone() let(agent)>
                            <li data-testid="agent-row" data-agent-id=agent.agent_id.clone()>
                                <span class="agent-name">{agent.name.clone()}</span>
                                <span class="muted">{format!(" {} · {}×{}", agent.segment, agent.width, agent.height)}</span>
                                <button on:click={
                                    let agent = agent.clone();
                                    move |_| watch(agent.clone())
                                }>"View"</button>
                            </li>
                        </For>
                    </ul>
                </Show>
            </section>
            <section class="view">
                <div class="view-bar">
                    <span data-testid="view-agent">{move || watching.get().map(|a| a.name).unwrap_or_default()}</span>
                    <span class="view-state" data-testid="view-state" data-state=move || match view_state.get() {
                        ViewState::Ended(_) => "ended".to_owned(),
                        other => other.label(),
                    }>{move || view_state.get().label()}</span>
                    <Show when=move || watching.get().is_some()>
                        <button on:click=stop>"Close view"</button>
                    </Show>
                </div>
                <video node_ref=video_ref id="remote-video" data-testid="remote-video" autoplay=true playsinline=true muted=true></video>
            </section>
        </main>
    }
}
