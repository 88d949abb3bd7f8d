//! The auditor's recordings page (R45, R27, R29, R30, R32): search by ticket, operator, device,
//! endpoint user and time; open a recording (a passkey step-up, and an audit event on the relay):
//! the relay hands over its signed manifest and its chunks encrypted to the auditors' keys, which
//! it cannot read; this page decrypts them with the auditor's own identity (kept in memory, never
//! sent or stored), verifies everything against the node key the auditor pinned (the manifest's
//! signatures and chain, every chunk's hash, every frame against the endpoint's seals, that it is
//! the recording asked for), then plays the frames (`player`) beside the timeline, where clicking
//! an entry seeks there.

use leptos::prelude::*;
use serde::Deserialize;

use crate::auth::with_step_up;
use crate::http;
use crate::player::FramePlayer;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Listed {
    id: String,
    ticket: String,
    reason: String,
    operator: String,
    device: String,
    endpoint_user: String,
    started_ms: u64,
    complete: bool,
    /// Frames recorded: none for a session denied or ended before the first picture.
    #[serde(default)]
    frames: u64,
    #[serde(default)]
    end_reason: Option<String>,
}

impl Listed {
    /// A closed recording with no picture (a denied session): set apart in the list, with why.
    fn without_picture(&self) -> Option<String> {
        (self.complete && self.frames == 0)
            .then(|| format!("no picture: {}", self.end_reason.as_deref().unwrap_or("ended before the first frame")))
    }
}

/// What the relay hands over: the signed manifest and which chunks it stores (encrypted).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Served {
    id: String,
    node: String,
    manifest: String,
    chunks: Vec<u64>,
}

/// A recording opened and verified in this browser.
#[derive(Debug, Clone)]
struct Opened {
    report: sightline_core::recording::RecordingReport,
    /// The node key it was verified with (the pinned one).
    key: String,
    timeline: Vec<serde_json::Value>,
}

/// Decrypts the served chunks with `identity` and verifies the recording against the key
/// pinned for its node: what the relay could not do for it.
async fn open_here(
    served: Served,
    identity: &age::x25519::Identity,
) -> Result<(Opened, Vec<(f64, bool, Vec<u8>)>, (u32, u32)), String> {
    use sightline_core::recording;
    let key = crate::audit::pinned_for(&served.node, &crate::audit::pinned_keys()).ok_or_else(|| {
        format!("no key is pinned for node {}: pin the node's key first (Trusted node keys)", served.node)
    })?;
    let relay_key = recording::verifying_key_from_note(&key).map_err(|e| format!("the pinned key: {e}"))?;
    let mut plain = std::collections::BTreeMap::new();
    for n in &served.chunks {
        let sealed =
            http::get_bytes(&format!("/api/recordings/{}/chunks/{n}", served.id)).await.map_err(|e| e.to_string())?;
        let opened =
            age::decrypt(identity, &sealed).map_err(|e| format!("chunk {n} does not open with your identity: {e}"))?;
        plain.insert(*n, opened);
    }
    let present = served.chunks.iter().copied().collect();
    let verified = recording::verify(&served.manifest, &relay_key, &present, |i| {
        plain.get(&i).cloned().ok_or_else(|| "not served".to_owned())
    })
    .map_err(|e| format!("the recording does not verify: {e}"))?;
    let r = &verified.report;
    // A session's first recording has its id; one that continues it on another node (R43) has
    // its own and names the session in its facts.
    let own_id = match r.continues {
        None => r.session.session_id == served.id,
        Some(_) => r.session.session_id != served.id,
    };
    if r.recording_id != served.id || !own_id {
        return Err(format!(
            "the relay served recording {} (session {}) for {}",
            r.recording_id, r.session.session_id, served.id
        ));
    }
    let timeline =
        recording::timeline_jsonl(&verified.chunks).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let shown = recording::shown_frames(&verified.chunks);
    let size =
        shown.first().and_then(|f| recording::vp8::keyframe_size(f.data)).ok_or("the recording holds no keyframe")?;
    let frames = shown.iter().map(|f| (f.ms as f64, f.keyframe, f.data.to_vec())).collect();
    Ok((Opened { report: verified.report.clone(), key, timeline }, frames, size))
}

pub(crate) fn utc(ms: u64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    String::from(date.to_iso_string()).replace('T', " ").chars().take(19).collect()
}

fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

#[component]
pub fn RecordingsView() -> impl IntoView {
    let fields: Vec<(&'static str, &'static str, RwSignal<String>)> = vec![
        ("ticket", "Ticket", RwSignal::new(String::new())),
        ("operator", "Operator", RwSignal::new(String::new())),
        ("device", "Device", RwSignal::new(String::new())),
        ("user", "Endpoint user", RwSignal::new(String::new())),
        ("from", "From", RwSignal::new(String::new())),
        ("to", "To", RwSignal::new(String::new())),
    ];
    let results = RwSignal::new(Vec::<Listed>::new());
    let message = RwSignal::new(String::new());
    let opened = RwSignal::new(None::<(Listed, Opened)>);
    let canvas_ref = NodeRef::<leptos::html::Canvas>::new();
    let player = StoredValue::new_local(None::<FramePlayer>);
    // The auditor's identity: in this page's memory only, never stored or sent.
    let identity = RwSignal::new(String::new());
    let keys = RwSignal::new(crate::audit::pinned_keys());

    let query_fields = fields.clone();
    let search = move || {
        let query: Vec<String> = query_fields
            .iter()
            .filter(|(_, _, v)| !v.get_untracked().trim().is_empty())
            .map(|(name, _, v)| format!("{name}={}", http::encode_component(v.get_untracked().trim())))
            .collect();
        leptos::task::spawn_local(async move {
            match http::get::<Vec<Listed>>(&format!("/api/recordings?{}", query.join("&"))).await {
                Ok(list) => {
                    message.set(if list.is_empty() { "No recording matches.".into() } else { String::new() });
                    results.set(list);
                }
                Err(e) => message.set(format!("cannot search recordings: {e}")),
            }
        });
    };
    search();
    let open = move |listed: Listed| {
        leptos::task::spawn_local(async move {
            opened.set(None);
            let identity = match identity.get_untracked().trim().parse::<age::x25519::Identity>() {
                Ok(identity) => identity,
                Err(e) => {
                    message.set(format!("give your age identity (AGE-SECRET-KEY-1...) to open recordings: {e}"));
                    return;
                }
            };
            let path = format!("/api/recordings/{}", listed.id);
            let served = match with_step_up(|| http::get::<Served>(&path)).await {
                Ok(served) => served,
                Err(e) => {
                    message.set(format!("cannot open the recording: {e}"));
                    return;
                }
            };
            match open_here(served, &identity).await {
                Ok((o, frames, (width, height))) => {
                    message.set(String::new());
                    opened.set(Some((listed.clone(), o)));
                    // The canvas exists once the player section is drawn.
                    leptos::task::tick().await;
                    let Some(canvas) = canvas_ref.get_untracked() else { return };
                    let p = FramePlayer::new(&canvas, width, height);
                    for (ms, key, data) in &frames {
                        p.push(*ms, *key, data);
                    }
                    // The first picture at once; playing is the auditor's click.
                    let _ = p.seek(0.0);
                    player.set_value(Some(p));
                }
                Err(e) => message.set(e),
            }
        });
    };
    let seek = move |video_ms: i64| {
        player.with_value(|p| {
            if let Some(p) = p {
                let _ = p.seek(video_ms.max(0) as f64);
            }
        });
    };
    let search_enter = search.clone();
    view! {
        <section class="recordings" data-testid="recordings-page">
            <h2>"Recordings"</h2>
            <div class="filters">
                {fields.into_iter().map(|(name, label, signal)| {
                    let search = search_enter.clone();
                    view! {
                        <label>{label}" "<input name=format!("recording-{name}") bind:value=signal
                            on:keydown=move |ev| if ev.key() == "Enter" { search() }/></label>
                    }
                }).collect_view()}
                <button data-testid="recordings-search" on:click=move |_| search()>"Search"</button>
            </div>
            <div class="filters">
                <label>"Your age identity (opens recordings; stays in this page) "
                    <input type="password" name="recording-identity" autocomplete="off" bind:value=identity/></label>
                <label>"Trusted node keys "
                    <textarea name="recording-keys" rows="2" cols="60" bind:value=keys></textarea></label>
                <button data-testid="recording-pin" on:click=move |_| crate::audit::pin_keys(&keys.get_untracked())>"Pin"</button>
            </div>
            <p class="muted" data-testid="recordings-message">{move || message.get()}</p>
            <ul>
                <For each=move || results.get() key=|r| r.id.clone() let(r)>
                    {
                        let row = r.clone();
                        view! {
                            <li data-testid="recording-row" data-id=r.id.clone() data-empty=r.without_picture().is_some().to_string()
                                class:muted=r.without_picture().is_some()>
                                <span>{format!("{} · {} ({}) · {} · {} / {} · {}{}", utc(r.started_ms), r.ticket, r.reason, r.operator, r.device, r.endpoint_user, r.id, if r.complete { "" } else { " · incomplete" })}</span>
                                {r.without_picture().map(|why| view! { <span class="empty-recording" data-testid="recording-empty">{format!(" · {why}")}</span> })}
                                <button data-testid="recording-open" on:click=move |_| open(row.clone())>"Open"</button>
                            </li>
                        }
                    }
                </For>
            </ul>
            {move || opened.get().map(|(listed, o)| {
                let r = o.report.clone();
                let state = if r.complete { "complete" } else { "incomplete" };
                view! {
                    <div class="player" data-testid="recording-player" data-id=listed.id.clone()>
                        <p class="verification" data-testid="recording-verification" data-state=state>
                            {format!(
                                "Verified in this browser with your identity and the key you pinned for node {} ({}): the manifest's signatures and chain, the hashes of {} chunks, and {} of {} frames against {} seals signed by the endpoint ({} sealed frames missing, each accounted for by the recorder or the end; {} after the last seal). {}",
                                r.node, o.key, r.chunks, r.frames_matched, r.frames, r.seals, r.gaps, r.unsealed_tail,
                                if r.complete { format!("Complete: {}.", r.end_reason.clone().unwrap_or_default()) } else { "INCOMPLETE: the relay stopped during the session.".to_owned() }
                            )}
                        </p>
                        {r.continues.clone().map(|c| view! {
                            <p class="continues" data-testid="recording-continues">
                                {format!(
                                    "Continues recording {} of node {} (its {} chunks as that node last published them): nothing was recorded for {} s, from {} to {}, because {}.",
                                    c.previous, c.previous_node, c.previous_chunks, c.gap.end_ms.saturating_sub(c.gap.start_ms).div_ceil(1000),
                                    utc(c.gap.start_ms), utc(c.gap.end_ms), c.gap.cause
                                )}
                            </p>
                        })}
                        <div>
                            <button data-testid="recording-play" on:click=move |_| player.with_value(|p| if let Some(p) = p { p.play() })>"Play"</button>
                            <button data-testid="recording-pause" on:click=move |_| player.with_value(|p| if let Some(p) = p { p.pause() })>"Pause"</button>
                        </div>
                        <div class="player-body">
                            <canvas node_ref=canvas_ref data-testid="recording-canvas"></canvas>
                            <ol class="timeline" data-testid="recording-timeline">
                                // The endpoint seals its frames about once a second: those lines would
                                // drown what happened. They are counted here and checked above.
                                {
                                    let seals = o.timeline.iter().filter(|e| e["type"] == "seal").count();
                                    view! {
                                        <li class="muted" data-testid="timeline-seals">
                                            {format!("{seals} frame seals from the endpoint (checked above; not listed)")}
                                        </li>
                                    }
                                }
                                {o.timeline.iter().filter(|e| e["type"] != "seal").map(|entry| {
                                    let at = entry["video_ms"].as_i64().unwrap_or(0);
                                    let (what, detail) = crate::timeline_words::describe(entry);
                                    let kind = what.clone();
                                    view! {
                                        // A button, so the keyboard seeks as the mouse does.
                                        <li data-testid="timeline-entry" data-kind=kind data-video-ms=at.to_string()>
                                            <button type="button" class="seek" on:click=move |_| seek(at)>
                                                <span class="at">{clock(at)}</span>" "<b>{what}</b>" "<span>{detail}</span>
                                            </button>
                                        </li>
                                    }
                                }).collect_view()}
                            </ol>
                        </div>
                    </div>
                }
            })}
        </section>
    }
}
