//! The operator's queue of help requests (R2): who asked, on which endpoint, since when, and the
//! code the user reads out on the phone. An operator takes a request up from the queue, or by
//! typing the code the caller reads; either way the session then needs the ticket, the reason
//! and the user's consent like any other.

use leptos::prelude::*;
use sightline_proto::HelpRequest;

/// Seconds since `ms` (Unix ms), for "asked 2 min ago".
fn age_text(created_ms: u64) -> String {
    let now = js_sys::Date::now() as u64;
    let s = now.saturating_sub(created_ms) / 1000;
    if s < 60 { format!("{s} s ago") } else { format!("{} min ago", s / 60) }
}

#[component]
pub fn HelpQueue(requests: ReadSignal<Vec<HelpRequest>>, take: Callback<HelpRequest>) -> impl IntoView {
    let typed = RwSignal::new(String::new());
    let message = RwSignal::new(String::new());
    let take_typed = move || {
        let Some(code) = sightline_core::help::normalise(&typed.get_untracked()) else {
            message.set("A help code has six digits.".into());
            return;
        };
        match requests.with_untracked(|r| r.iter().find(|r| r.code == code).cloned()) {
            Some(request) => {
                message.set(String::new());
                typed.set(String::new());
                take.run(request);
            }
            None => message.set("No open help request has this code (it may have been taken, or lapsed).".into()),
        }
    };
    view! {
        <h2>"Help requests"</h2>
        <div class="help-code">
            <label>"Code from the caller "
                <input name="help-code" inputmode="numeric" placeholder="123 456" bind:value=typed
                    on:keydown=move |ev| if ev.key() == "Enter" { take_typed() }/>
            </label>
            <button data-testid="take-help-code" on:click=move |_| take_typed()>"Take"</button>
            <span class="muted" data-testid="help-message">{move || message.get()}</span>
        </div>
        <Show when=move || requests.with(|r| !r.is_empty()) fallback=|| view! { <p class="muted" data-testid="no-help">"Nobody is asking for help."</p> }>
            <ul>
                <For each=move || requests.get() key=|r| r.id.clone() let(request)>
                    <li data-testid="help-row" data-code=request.code.clone() data-agent-id=request.agent_id.clone()>
                        <span class="agent-name">{request.device.clone()}</span>
                        <span class="muted">{format!(" {} · asked {} · code {}", request.user, age_text(request.created_ms), sightline_core::help::spoken(&request.code))}</span>
                        <button on:click={
                            let request = request.clone();
                            move |_| take.run(request.clone())
                        }>"Take"</button>
                    </li>
                </For>
            </ul>
        </Show>
    }
}
