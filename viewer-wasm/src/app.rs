//! The viewer's components: relay status, the list of online agents, and the view of one agent.

use leptos::prelude::*;
use sightline_proto::{AgentInfo, ErrorCode, RelayToViewer, ViewEndReason, ViewerToRelay};
use web_sys::{MediaStream, RtcPeerConnection, RtcPeerConnectionState};

use crate::media::{self, MediaEvent};
use crate::signaling::{RelayState, Signaling};

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
pub fn App() -> impl IntoView {
    let (agents, set_agents) = signal(Vec::<AgentInfo>::new());
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
                    if !signaling.send(&ViewerToRelay::Watch { agent_id: agent.agent_id, sdp }) {
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
        <header class="topbar">
            <h1>"Sightline"</h1>
            <span class="relay-state" data-testid="relay-state" data-state=move || format!("{:?}", signaling.state.get()).to_lowercase()>
                {relay_label}
            </span>
        </header>
        <main class="layout">
            <section class="agents">
                <h2>"Online endpoints"</h2>
                <Show when=move || agents.with(|a| !a.is_empty()) fallback=|| view! { <p class="muted" data-testid="no-agents">"No endpoint is online."</p> }>
                    <ul>
                        <For each=move || agents.get() key=|a| a.agent_id.clone() let(agent)>
                            <li data-testid="agent-row" data-agent-id=agent.agent_id.clone()>
                                <span class="agent-name">{agent.name.clone()}</span>
                                <span class="muted">{format!(" {}×{}", agent.width, agent.height)}</span>
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
