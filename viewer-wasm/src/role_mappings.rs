//! The directory's role tables (R12): which groups at each identity provider give which roles.
//! One admin asks for a new table, a second approves it, each with a passkey step-up; the
//! approver sees what changes group by group. The SSO file's `admin_from_directory` is the
//! ceiling: no table here can give `admin` past it. A table may also narrow, by group, the
//! policy's segments people reach.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;
use sightline_core::role_mapping::{parse_segments_text, parse_table_text, segments_text, table_changes, table_text};
use sightline_core::roles::Role;

use crate::auth::with_step_up;
use crate::http;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Table {
    provider: String,
    groups: BTreeMap<String, Vec<Role>>,
    segments: Option<BTreeMap<String, Vec<String>>>,
    known_segments: Vec<String>,
    sha256: String,
    approved_by_name: Option<String>,
    admin_from_directory: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Request {
    id: String,
    provider: String,
    groups: BTreeMap<String, Vec<Role>>,
    segments: Option<BTreeMap<String, Vec<String>>>,
    requested_by_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Listing {
    tables: Vec<Table>,
    requests: Vec<Request>,
}

fn names_text<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() { "nothing".into() } else { names.join(", ") }
}

/// What a request changes, line by line: roles by group, then segments by group.
fn change_lines(before: &Table, request: &Request) -> Vec<String> {
    let mut lines: Vec<String> = table_changes(&before.groups, &request.groups)
        .into_iter()
        .map(|(group, was, now)| {
            format!(
                "{group}: {} → {}",
                names_text(was.iter().map(|r| r.as_str())),
                names_text(now.iter().map(|r| r.as_str()))
            )
        })
        .collect();
    match (&before.segments, &request.segments) {
        (None, None) => {}
        (Some(_), None) => lines.push("segments: no longer narrowed by groups (the policy alone decides)".into()),
        (was, Some(now)) => {
            if was.is_none() {
                lines.push("segments: narrowed by groups from now on".into());
            }
            let was = was.clone().unwrap_or_default();
            lines.extend(table_changes(&was, now).into_iter().map(|(group, was, now)| {
                format!(
                    "{group} reaches segments: {} → {}",
                    names_text(was.iter().map(String::as_str)),
                    names_text(now.iter().map(String::as_str))
                )
            }));
        }
    }
    lines
}

#[component]
pub fn RoleMappings() -> impl IntoView {
    let listing = RwSignal::new(Listing::default());
    let message = RwSignal::new(None::<(bool, String)>);
    let reload = move || {
        leptos::task::spawn_local(async move {
            if let Ok(l) = http::get::<Listing>("/api/admin/role-mappings").await {
                listing.set(l);
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
    };
    let request = move |provider: String, roles: String, segments: String| {
        let parsed = parse_table_text(&roles)
            .map_err(|e| format!("roles: {e}"))
            .and_then(|g| Ok((g, parse_segments_text(&segments).map_err(|e| format!("segments: {e}"))?)));
        let (groups, segments) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return message.set(Some((false, e))),
        };
        let body = json!({ "provider": provider, "groups": groups, "segments": segments });
        leptos::task::spawn_local(async move {
            let result = with_step_up(|| http::post::<_, serde_json::Value>("/api/admin/role-mappings", &body))
                .await
                .map(|_| ());
            report(result, "change of the role table requested: a second admin must approve it");
        });
    };
    let decide = move |id: String, approve: bool| {
        leptos::task::spawn_local(async move {
            let path = format!("/api/admin/role-mappings/{id}/{}", if approve { "approve" } else { "refuse" });
            let empty = json!({});
            let result = with_step_up(|| http::post::<_, serde_json::Value>(&path, &empty)).await.map(|_| ());
            report(
                result,
                if approve {
                    "role table approved: in force on every node; signed-in people follow it at the next re-read, within about 15 s"
                } else {
                    "change of the role table refused"
                },
            );
        });
    };
    let in_force = move |provider: &str| listing.with(|l| l.tables.iter().find(|t| t.provider == provider).cloned());
    // Only a relay with identity providers has tables.
    view! {
        <Show when=move || listing.with(|l| !l.tables.is_empty())>
        <div class="card">
        <h2>"Directory groups to roles (need a second admin)"</h2>
        <p class="muted">
            "One line per group: " <code>"group = role, role"</code>
            ". Segments, when given, narrow which of the policy's segments each group's people reach (never past what their roles may); \
             left empty, the policy alone decides. People follow the table at their next sign-in and within about 15 s of an approval; \
             a role or segment lost ends their sessions."
        </p>
        {move || message.get().map(|(ok, text)| view! {
            <p class=if ok { "notice" } else { "error" } data-testid="role-mapping-message">{text}</p>
        })}
        <For each=move || listing.get().tables key=|t| (t.provider.clone(), t.sha256.clone()) let(t)>
            {
                let draft = RwSignal::new(table_text(&t.groups));
                let draft_segments = RwSignal::new(t.segments.as_ref().map(segments_text).unwrap_or_default());
                let provider = t.provider.clone();
                let known = format!("segments in the policy: {}", t.known_segments.join(", "));
                let origin = match &t.approved_by_name {
                    Some(by) => format!("approved by {by}"),
                    None => "from the SSO file".to_owned(),
                };
                let ceiling = if t.admin_from_directory {
                    "groups may grant admin here"
                } else {
                    "no group may grant admin (admin_from_directory = false in the SSO file)"
                };
                view! {
                    <section data-testid="role-mapping" data-provider=t.provider.clone() data-sha256=t.sha256.clone()>
                        <h3>{format!("{}: table {} ({origin}); {ceiling}", t.provider, &t.sha256[..12.min(t.sha256.len())])}</h3>
                        <label>"New table "
                            <textarea name=format!("role-mapping-{}", t.provider) rows="5" cols="60"
                                prop:value=move || draft.get() on:input=move |ev| draft.set(event_target_value(&ev))></textarea>
                        </label>
                        <label>"Segments by group "
                            <textarea name=format!("role-segments-{}", t.provider) rows="3" cols="60"
                                prop:value=move || draft_segments.get()
                                on:input=move |ev| draft_segments.set(event_target_value(&ev))></textarea>
                        </label>
                        <p class="muted">{known}</p>
                        <button data-testid="role-mapping-request"
                            on:click=move |_| request(provider.clone(), draft.get_untracked(), draft_segments.get_untracked())>
                            "Request change"
                        </button>
                    </section>
                }
            }
        </For>
        <ul data-testid="mapping-requests">
            <For each=move || listing.get().requests key=|r| r.id.clone() let(r)>
                <li data-testid="mapping-request" data-provider=r.provider.clone()>
                    {format!("{}: new table requested by {}: ", r.provider, r.requested_by_name)}
                    <ul>
                        {in_force(&r.provider).map(|t| change_lines(&t, &r)).unwrap_or_default().into_iter().map(|line| view! {
                            <li data-testid="mapping-change">{line}</li>
                        }).collect_view()}
                    </ul>
                    <button on:click={ let id = r.id.clone(); move |_| decide(id.clone(), true) }>"Approve"</button>
                    <button on:click={ let id = r.id.clone(); move |_| decide(id.clone(), false) }>"Refuse"</button>
                </li>
            </For>
        </ul>
        </div>
        </Show>
    }
}
