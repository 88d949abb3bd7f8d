//! The auditor's recordings page (R45, R27, R29, R30): search by ticket, operator, device,
//! endpoint user and time; open a recording (a passkey step-up, and an audit event on the relay)
//! to play its video beside its timeline, where clicking an entry seeks the video there; and see
//! plainly what the relay's verification established (manifest signatures, chunk hashes, the
//! endpoint's seals, whether the recording is complete).

use leptos::prelude::*;
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::auth::with_step_up;
use crate::http;

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
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Report {
    complete: bool,
    end_reason: Option<String>,
    chunks: u64,
    frames: u64,
    seals: u64,
    frames_matched: u64,
    gaps: u64,
    unsealed_tail: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Opened {
    report: Report,
    timeline: Vec<serde_json::Value>,
}

pub(crate) fn utc(ms: u64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    String::from(date.to_iso_string()).replace('T', " ").chars().take(19).collect()
}

fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// What one timeline entry says, in a line.
fn describe(entry: &serde_json::Value) -> (String, String) {
    let s = |k: &str| entry[k].as_str().unwrap_or_default().to_owned();
    match entry["type"].as_str().unwrap_or_default() {
        "event" => (s("kind"), format!("{}: {}", s("actor"), s("detail").chars().take(120).collect::<String>())),
        "chat" => ("chat".into(), format!("{}: {}", s("from"), s("text"))),
        "input" => ("input".into(), entry["counts"].to_string()),
        "recorder" => ("recorder".into(), format!("{}: {}", s("state"), s("detail"))),
        "gap" => ("gap".into(), format!("frames not recorded: {}", s("reason"))),
        other => (other.to_owned(), String::new()),
    }
}

/// Fetches the video as a blob: a blob URL seeks anywhere, without range requests.
async fn video_url(id: &str) -> Result<String, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&format!("/api/recordings/{id}/video")))
        .await
        .map_err(|e| format!("{e:?}"))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("the relay refused the video ({})", response.status()));
    }
    let blob: web_sys::Blob = JsFuture::from(response.blob().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("{e:?}"))?
        .unchecked_into();
    web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| format!("{e:?}"))
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
    let video = RwSignal::new(None::<String>);
    let video_ref = NodeRef::<leptos::html::Video>::new();

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
            let path = format!("/api/recordings/{}", listed.id);
            match with_step_up(|| http::get::<Opened>(&path)).await {
                Ok(o) => {
                    opened.set(Some((listed.clone(), o)));
                    match video_url(&listed.id).await {
                        Ok(url) => video.set(Some(url)),
                        Err(e) => message.set(e),
                    }
                }
                Err(e) => message.set(format!("cannot open the recording: {e}")),
            }
        });
    };
    let seek = move |video_ms: i64| {
        if let Some(v) = video_ref.get() {
            v.set_current_time((video_ms.max(0) as f64) / 1000.0);
        }
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
            <p class="muted" data-testid="recordings-message">{move || message.get()}</p>
            <ul>
                <For each=move || results.get() key=|r| r.id.clone() let(r)>
                    {
                        let row = r.clone();
                        view! {
                            <li data-testid="recording-row" data-id=r.id.clone()>
                                <span>{format!("{} · {} ({}) · {} · {} / {} · {}{}", utc(r.started_ms), r.ticket, r.reason, r.operator, r.device, r.endpoint_user, r.id, if r.complete { "" } else { " · incomplete" })}</span>
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
                                "Verified by the relay: the manifest's signatures and chain, the hashes of {} chunks, and {} of {} frames against {} seals signed by the endpoint ({} sealed frames missing in transit, {} after the last seal). {}",
                                r.chunks, r.frames_matched, r.frames, r.seals, r.gaps, r.unsealed_tail,
                                if r.complete { format!("Complete: {}.", r.end_reason.clone().unwrap_or_default()) } else { "INCOMPLETE: the relay stopped during the session.".to_owned() }
                            )}
                        </p>
                        <div class="player-body">
                            <video node_ref=video_ref controls muted autoplay data-testid="recording-video" src=move || video.get().unwrap_or_default()></video>
                            <ol class="timeline" data-testid="recording-timeline">
                                {o.timeline.iter().map(|entry| {
                                    let at = entry["video_ms"].as_i64().unwrap_or(0);
                                    let (what, detail) = describe(entry);
                                    let kind = what.clone();
                                    view! {
                                        <li data-testid="timeline-entry" data-kind=kind data-video-ms=at.to_string()
                                            on:click=move |_| seek(at)>
                                            <span class="at">{clock(at)}</span>" "<b>{what}</b>" "<span>{detail}</span>
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
