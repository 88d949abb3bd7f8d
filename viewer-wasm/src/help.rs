//! The operator's queue of help requests (R2): who asked, on which endpoint, since when. The
//! queue never shows a request's code: the user reads it out on the phone, and an operator who
//! types it proves they talk to the person who asked. The relay finds the endpoint from the code;
//! the session then needs the ticket, the reason and the user's consent like any other.

use leptos::prelude::*;
use sightline_proto::HelpQueueEntry;

/// Seconds since `ms` (Unix ms), for "asked 2 min ago".
fn age_text(created_ms: u64) -> String {
    let now = js_sys::Date::now() as u64;
    let s = now.saturating_sub(created_ms) / 1000;
    if s < 60 { format!("{s} s ago") } else { format!("{} min ago", s / 60) }
}

#[component]
pub fn HelpQueue(requests: ReadSignal<Vec<HelpQueueEntry>>, take: Callback<String, bool>) -> impl IntoView {
    let typed = RwSignal::new(String::new());
    let message = RwSignal::new(String::new());
    let take_typed = move || {
        let Some(code) = sightline_core::help::normalise(&typed.get_untracked()) else {
            message.set("A help code has six digits: ask the caller to read it out.".into());
            return;
        };
        message.set(String::new());
        // Kept while the request cannot go yet (no ticket or reason): the caller need not read it again.
        if take.run(code) {
            typed.set(String::new());
        }
    };
    view! {
        <div class="help-queue" data-testid="help-requests">
        <h2>"Help requests"</h2>
        <div class="help-code">
            <label>"Code the caller reads out "
                <input name="help-code" inputmode="numeric" autocomplete="off" placeholder="123 456" bind:value=typed
                    on:keydown=move |ev| if ev.key() == "Enter" { take_typed() }/>
            </label>
            <button data-testid="take-help-code" on:click=move |_| take_typed()>"Take"</button>
            <span class="muted" data-testid="help-message" role="status">{move || message.get()}</span>
        </div>
        <Show when=move || requests.with(|r| !r.is_empty()) fallback=|| view! { <p class="muted" data-testid="no-help">"Nobody is asking for help."</p> }>
            <ul>
                <For each=move || requests.get() key=|r| r.id.clone() let(request)>
                    <li data-testid="help-row" data-agent-id=request.agent_id.clone()>
                        <span class="agent-name">{request.device.clone()}</span>
                        <span class="muted">{format!(" {} · asked {}", request.user, age_text(request.created_ms))}</span>
                    </li>
                </For>
            </ul>
        </Show>
        </div>
    }
}
