//! The signed-in person's own sessions (ASVS 7.5.2): where each signed in from, with which
//! browser, when it started and was last active, with "End" for each and "End all others".
//! Ending the session in hand signs this page out.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::http;
use crate::widgets::local_time;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct OwnSession {
    id: String,
    current: bool,
    source: Option<String>,
    device: Option<String>,
    started_s: u64,
    last_seen_s: u64,
}

#[derive(Deserialize)]
struct Listing {
    sessions: Vec<OwnSession>,
}

#[component]
pub fn OwnSessions(on_session_ended: Callback<String>) -> impl IntoView {
    let sessions = RwSignal::new(Vec::<OwnSession>::new());
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let load = move || {
        leptos::task::spawn_local(async move {
            match http::get::<Listing>("/api/me/sessions").await {
                Ok(l) => sessions.set(l.sessions),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    load();
    let end = move |path: String, current: bool| {
        leptos::task::spawn_local(async move {
            match http::post::<_, serde_json::Value>(&path, &json!({})).await {
                Ok(v) if current => {
                    let _ = v;
                    on_session_ended.run("You ended this session.".into());
                }
                Ok(v) => {
                    notice.set(Some(format!("Ended {} session(s).", v["ended"].as_u64().unwrap_or(0))));
                    load();
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <section class="card" aria-labelledby="own-sessions-title">
            <h2 id="own-sessions-title">"Your sign-ins"</h2>
            <p class="muted">"Every place you are signed in now. End any you do not recognise."</p>
            <table data-testid="own-sessions">
                <thead><tr><th>"Browser"</th><th>"Address"</th><th>"Signed in"</th><th>"Last active"</th><th></th></tr></thead>
                <tbody>
                    {move || sessions.get().into_iter().map(|s| {
                        let path = format!("/api/me/sessions/{}/end", s.id);
                        let current = s.current;
                        view! {
                            <tr data-testid="own-session" data-current=current.to_string()>
                                <td>{s.device.clone().unwrap_or_else(|| "unknown browser".into())}{current.then_some(" (this one)")}</td>
                                <td>{s.source.clone().unwrap_or_else(|| "-".into())}</td>
                                <td>{local_time(s.started_s * 1000)}</td>
                                <td>{local_time(s.last_seen_s * 1000)}</td>
                                <td><button on:click=move |_| end(path.clone(), current)>{if current { "End (signs out here)" } else { "End" }}</button></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <button data-testid="end-other-sessions" on:click=move |_| end("/api/me/sessions/end-others".into(), false)>"End all others"</button>
            {move || notice.get().map(|n| view! { <p class="notice" role="status" data-testid="own-sessions-notice">{n}</p> })}
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </section>
    }
}
