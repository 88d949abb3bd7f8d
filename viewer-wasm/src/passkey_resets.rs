//! Resetting a directory account's lost passkey: one admin asks, a second approves, each with a
//! passkey step-up. Approval removes the person's passkeys and ends their sessions; they enrol a
//! new one by signing in through their organisation, which no admin can do for them.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::auth::with_step_up;
use crate::http;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ResetRow {
    id: String,
    target_name: String,
    requested_by_name: String,
}

/// `resettable`: the directory accounts with a passkey, as (id, name); the relay refuses the rest.
#[component]
pub fn PasskeyResets(resettable: Signal<Vec<(String, String)>>, changed: Callback<()>) -> impl IntoView {
    let requests = RwSignal::new(Vec::<ResetRow>::new());
    let message = RwSignal::new(None::<(bool, String)>);
    let target = RwSignal::new(String::new());
    let reload = move || {
        leptos::task::spawn_local(async move {
            if let Ok(r) = http::get::<Vec<ResetRow>>("/api/admin/passkey-resets").await {
                requests.set(r);
            }
        });
    };
    reload();
    let report = move |result: Result<(), String>, ok: &str| {
        message.set(Some(match result {
            Ok(()) => (true, ok.to_owned()),
            Err(e) => (false, e),
        }));
        reload();
        changed.run(());
    };
    let request = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "user_id": target.get_untracked() });
        leptos::task::spawn_local(async move {
            let result = with_step_up(|| http::post::<_, serde_json::Value>("/api/admin/passkey-resets", &body))
                .await
                .map(|_| ());
            report(result, "passkey reset requested: a second admin must approve it");
        });
    };
    let decide = move |id: String, approve: bool| {
        leptos::task::spawn_local(async move {
            let path = format!("/api/admin/passkey-resets/{id}/{}", if approve { "approve" } else { "refuse" });
            let empty = json!({});
            let result = with_step_up(|| http::post::<_, serde_json::Value>(&path, &empty)).await.map(|_| ());
            report(
                result,
                if approve {
                    "passkey reset approved: the person's sessions ended; they enrol a new passkey by signing in through their organisation"
                } else {
                    "passkey reset refused"
                },
            );
        });
    };
    view! {
        <h2>"Lost passkeys (need a second admin)"</h2>
        <p class="muted">
            "For people who sign in through the organisation. The reset removes their passkeys and ends their \
             sessions; their next sign-in at the identity provider enrols a new one. Nobody else can enrol it."
        </p>
        <form on:submit=request data-testid="passkey-reset-form">
            <label>"User "
                <select name="reset-user" on:change=move |ev| target.set(event_target_value(&ev))>
                    <option value="">"user…"</option>
                    <For each=move || resettable.get() key=|(id, _)| id.clone() let((id, name))>
                        <option value=id>{name}</option>
                    </For>
                </select>
            </label>
            <button type="submit">"Request reset"</button>
        </form>
        {move || message.get().map(|(ok, text)| view! {
            <p class=if ok { "notice" } else { "error" } data-testid="passkey-reset-message">{text}</p>
        })}
        <ul data-testid="passkey-resets">
            <For each=move || requests.get() key=|r| r.id.clone() let(r)>
                <li data-testid="passkey-reset">
                    {format!("reset the passkey of {} (requested by {}) ", r.target_name, r.requested_by_name)}
                    <button on:click={ let id = r.id.clone(); move |_| decide(id.clone(), true) }>"Approve"</button>
                    <button on:click={ let id = r.id.clone(); move |_| decide(id.clone(), false) }>"Refuse"</button>
                </li>
            </For>
        </ul>
    }
}
