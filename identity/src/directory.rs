//! People from the organisation's directory (R12): what a verified OpenID Connect sign-in may do.
//!
//! The directory says who the person is; the relay's own check is still their passkey (R11). A
//! verified sign-in (`directory_sign_in`, after `sightline-sso` checked the ID token) leaves a
//! one-time ticket, valid five minutes, that the browser holds in an `HttpOnly` cookie and spends
//! on the passkey step (`directory_continue`): the first time, it enrols a passkey bound to the
//! directory identity (issuer + subject, never the e-mail address); every later time, it asks for
//! that passkey with user verification. No session exists before the passkey, so a directory
//! identity without one can do nothing. A directory account never signs in by name and passkey
//! alone (`login` refuses it): the directory is asked every time.
//!
//! Roles follow the directory: at every sign-in, and whenever the relay re-reads the person's
//! groups (`sync_directory_access`). A role lost ends every session of the person at once, on
//! every node, so a live session that needed it ends; a role gained applies from the next request.
//! With `local_accounts = "forbid"`, invited accounts neither sign in nor are invited, and no
//! bootstrap link is printed.

use super::*;

/// How long the browser has between the provider's answer and its passkey.
const TICKET_TTL: Duration = Duration::from_secs(300);

/// A directory identity: the provider that vouched for it, and the issuer and subject it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryLink {
    pub provider: String,
    pub issuer: String,
    pub subject: String,
}

/// A sign-in the provider vouched for, with the roles its groups map to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectorySignIn {
    pub link: DirectoryLink,
    /// The provider's suggestion for a user name (`preferred_username` or `email`).
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub roles: BTreeSet<Role>,
    /// The segments the groups narrow the person to (`None`: they do not narrow them).
    #[serde(default)]
    pub segments: Option<BTreeSet<String>>,
    /// The IdP's session id, which back-channel logout may name.
    pub idp_session: Option<String>,
    /// What lets the relay re-read the groups later (opaque here; `sightline-sso` reads it).
    pub grant: serde_json::Value,
}

impl DirectorySignIn {
    pub fn access(&self) -> DirectoryAccess {
        DirectoryAccess { roles: self.roles.clone(), segments: self.segments.clone() }
    }
}

/// What the directory gives a person now: roles, and the segments their groups narrow them to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectoryAccess {
    pub roles: BTreeSet<Role>,
    /// `None`: groups do not narrow the segments (the policy alone decides).
    pub segments: Option<BTreeSet<String>>,
}

fn segments_text(segments: &Option<BTreeSet<String>>) -> String {
    match segments {
        Some(s) => format!("[{}]", s.iter().map(String::as_str).collect::<Vec<_>>().join(",")),
        None => "not narrowed".into(),
    }
}

/// The passkey step that follows a directory sign-in.
#[derive(Debug)]
pub enum DirectoryNext {
    Enrol { ceremony_id: String, options: CreationChallengeResponse },
    Login { ceremony_id: String, options: RequestChallengeResponse },
}

#[derive(Serialize, Deserialize)]
struct Ticket {
    sign_in: DirectorySignIn,
    user_id: Option<String>,
}

/// Why the groups could not be read again: `definite` when the provider answered no (the person
/// disabled, the refresh token refused), otherwise perhaps an outage.
#[derive(Debug, Clone)]
pub struct RecheckFailure {
    pub definite: bool,
    pub why: String,
}

/// What the relay keeps to re-read a signed-in person's groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryGrant {
    pub user_id: String,
    pub link: DirectoryLink,
    pub grant: serde_json::Value,
    /// When the groups were last read (Unix seconds).
    pub checked_s: u64,
    /// Since when re-reading them fails, if it does.
    pub failing_since_s: Option<u64>,
    /// When the last session this grant serves can end at the latest (Unix seconds): the grant
    /// is not kept, nor re-read, past it.
    #[serde(default)]
    pub until_s: u64,
}

fn directory_key(issuer: &str, subject: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("{issuer}\n{subject}").as_bytes()))
}

fn ticket_key(ticket: &str) -> String {
    format!("sso-ticket:{}", token_hash(ticket))
}

fn idp_session_key(issuer: &str, sid: &str) -> String {
    format!("sso-idp-session:{}", directory_key(issuer, sid))
}

fn grant_key(user_id: &str) -> String {
    format!("sso-grant:{user_id}")
}

fn roles_text(roles: &BTreeSet<Role>) -> String {
    if roles.is_empty() { "none".into() } else { roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",") }
}

impl Identity {
    /// Whether invited (local) accounts may sign in and be invited.
    pub fn local_accounts_allowed(&self) -> bool {
        self.settings.local_accounts
    }

    pub(super) fn refuse_local(&self) -> Result<(), IdentityError> {
        if self.settings.local_accounts {
            Ok(())
        } else {
            Err(IdentityError::Forbidden("local accounts are switched off: sign in through your organisation".into()))
        }
    }

    /// Records a refused directory sign-in (or logout) with its reason.
    pub fn directory_refused(
        &self,
        provider: &str,
        subject: Option<&str>,
        source: Option<IpAddr>,
        reason: &str,
        detail: &str,
    ) {
        self.emit(
            EventKind::DirectoryRefused,
            Outcome::Failure,
            subject.unwrap_or("unknown"),
            Some(provider),
            source,
            format!("reason={reason} {detail}"),
        );
    }

    /// The account bound to a directory identity, if any.
    pub async fn directory_user(&self, issuer: &str, subject: &str) -> Result<Option<User>, IdentityError> {
        let Some(id) =
            self.store.get::<String>(Collection::DirectoryIdentities, &directory_key(issuer, subject)).await?
        else {
            return Ok(None);
        };
        self.user(&id).await
    }

    /// A sign-in the provider vouched for: brings the account's roles in line with the directory
    /// and returns the one-time ticket for the passkey step. Refused (and recorded) when no
    /// group maps to a role; an existing account then loses its roles and sessions.
    pub async fn directory_sign_in(&self, sign_in: DirectorySignIn, source: IpAddr) -> Result<String, IdentityError> {
        // No ceremony budget here or in `directory_continue`: the sign-in paid at its start (a
        // callback needs that start's state, a continuation that callback's ticket).
        self.audit_available()?;
        let link = &sign_in.link;
        let existing = self.directory_user(&link.issuer, &link.subject).await?;
        if let Some(user) = &existing {
            self.sync_directory_access(&user.id, &sign_in.access(), "sign-in", Some(source)).await?;
        }
        if sign_in.roles.is_empty() {
            self.directory_refused(
                &link.provider,
                Some(&link.subject),
                Some(source),
                "no_mapped_group",
                &format!("groups [{}] map to no role", sign_in.groups.join(",")),
            );
            self.audit_committed().await?;
            return Err(IdentityError::Forbidden("none of your directory groups gives a role in Sightline".into()));
        }
        self.emit(
            EventKind::DirectoryVerified,
            Outcome::Success,
            existing.as_ref().map_or(link.subject.as_str(), |u| u.name.as_str()),
            Some(&link.provider),
            Some(source),
            format!(
                "issuer={} subject={} groups=[{}] roles={} next={}",
                link.issuer,
                link.subject,
                sign_in.groups.join(","),
                roles_text(&sign_in.roles),
                if existing.as_ref().is_some_and(|u| !u.passkeys.is_empty()) { "passkey" } else { "enrol_passkey" }
            ),
        );
        let ticket = random_token();
        let record = Ticket { user_id: existing.map(|u| u.id), sign_in };
        self.store.put_ephemeral(&ticket_key(&ticket), &record, TICKET_TTL).await?;
        Ok(ticket)
    }

    /// Spends the ticket on the passkey step: enrolment the first time, an assertion after.
    pub async fn directory_continue(&self, ticket: &str, source: IpAddr) -> Result<DirectoryNext, IdentityError> {
        self.audit_available()?;
        let Some(Ticket { sign_in, user_id }) = self.store.take_ephemeral::<Ticket>(&ticket_key(ticket)).await? else {
            return Err(IdentityError::Unauthenticated);
        };
        let user = match &user_id {
            Some(id) => Some(self.user(id).await?.ok_or(IdentityError::Unauthenticated)?),
            None => None,
        };
        if let Some(user) = user.as_ref().filter(|u| !u.passkeys.is_empty()) {
            self.check_lockout(&self.attempts(&lockout_key_addr(source)).await?)?;
            self.check_lockout(&self.attempts(&lockout_key_account(&user.id)).await?)?;
            let (options, state) = self
                .webauthn
                .start_passkey_authentication(&user.passkeys)
                .map_err(|e| IdentityError::BadRequest(format!("cannot start login: {e}")))?;
            let ceremony = Ceremony::Login {
                user_id: user.id.clone(),
                state,
                directory: Some(sign_in.link.provider.clone()),
                sign_in: Some(Box::new(sign_in)),
            };
            return Ok(DirectoryNext::Login { ceremony_id: self.begin_ceremony(&ceremony).await?, options });
        }
        let (user_id, name) = match &user {
            Some(u) => (u.id.parse::<Uuid>().unwrap_or_else(|_| Uuid::new_v4()), u.name.clone()),
            None => (Uuid::new_v4(), self.free_name(sign_in.username.as_deref(), &sign_in.link).await?),
        };
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_id, &name, &name, None)
            .map_err(|e| IdentityError::BadRequest(format!("cannot start registration: {e}")))?;
        let ceremony = Ceremony::DirectoryEnrol {
            user_id: user.as_ref().map_or_else(|| user_id.to_string(), |u| u.id.clone()),
            name,
            sign_in: Box::new(sign_in),
            state,
        };
        Ok(DirectoryNext::Enrol { ceremony_id: self.begin_ceremony(&ceremony).await?, options })
    }

    /// A user name for a new directory account: the provider's suggestion when valid and free,
    /// else the suggestion with the provider's name, else one made from the subject.
    async fn free_name(&self, suggestion: Option<&str>, link: &DirectoryLink) -> Result<String, IdentityError> {
        let base = suggestion.and_then(|s| valid_name(s).ok());
        let digest = &directory_key(&link.issuer, &link.subject)[..8];
        let candidates = base
            .iter()
            .flat_map(|b| [b.clone(), format!("{b}.{}", link.provider), format!("{b}.{digest}")])
            .chain([format!("{}.{digest}", link.provider)]);
        for name in candidates {
            if valid_name(&name).is_ok() && self.user_by_name(&name).await?.is_none() {
                return Ok(name);
            }
        }
        Err(IdentityError::Conflict("no free user name for this directory identity".into()))
    }

    /// Finishes the first passkey of a directory identity: creates (or completes) its account,
    /// with the roles the directory gives, and opens a session.
    pub async fn finish_directory_enrolment(
        &self,
        ceremony_id: &str,
        credential: &RegisterPublicKeyCredential,
        source: IpAddr,
    ) -> Result<(User, String), IdentityError> {
        let Some(Ceremony::DirectoryEnrol { user_id, name, sign_in, state }) = self.take_ceremony(ceremony_id).await?
        else {
            return Err(IdentityError::BadRequest("the passkey step expired or is unknown; sign in again".into()));
        };
        let passkey = self.webauthn.finish_passkey_registration(credential, &state).map_err(|e| {
            self.emit(
                EventKind::UserEnrolled,
                Outcome::Failure,
                &name,
                Some(&sign_in.link.provider),
                Some(source),
                format!("passkey registration failed: {e}"),
            );
            IdentityError::BadRequest("the passkey could not be registered (user verification is required)".into())
        })?;
        let link = sign_in.link.clone();
        let key = directory_key(&link.issuer, &link.subject);
        let user = match self.user(&user_id).await? {
            Some(existing) if !existing.passkeys.is_empty() => {
                return Err(IdentityError::Conflict("this account has a passkey already; sign in again".into()));
            }
            // An account whose passkeys an admin removed: it gets its new one.
            Some(_) => self
                .store
                .update::<User, _>(Collection::Users, &user_id, |u| {
                    let mut u = u?;
                    u.passkeys = vec![passkey.clone()];
                    u.roles = sign_in.roles.clone();
                    u.segments = sign_in.segments.clone();
                    Some(u)
                })
                .await?
                .ok_or(IdentityError::Unauthenticated)?,
            None => {
                if !self.store.insert_new(Collection::DirectoryIdentities, &key, &user_id).await? {
                    return Err(IdentityError::Conflict(
                        "this directory identity enrolled meanwhile; sign in again".into(),
                    ));
                }
                if !self.store.insert_new(Collection::UserNames, &name, &user_id).await? {
                    self.store.delete(Collection::DirectoryIdentities, &key).await?;
                    return Err(IdentityError::Conflict(format!("a user named {name:?} exists; sign in again")));
                }
                let user = User {
                    id: user_id,
                    name: name.clone(),
                    display_name: name,
                    roles: sign_in.roles.clone(),
                    passkeys: vec![passkey],
                    created_ms: self.now_ms(),
                    bootstrap: false,
                    directory: Some(link.clone()),
                    segments: sign_in.segments.clone(),
                };
                if let Err(e) = self.store.put(Collection::Users, &user.id, &user).await {
                    // Leave no binding without an account behind, or this identity could never enrol.
                    let _ = self.store.delete(Collection::UserNames, &user.name).await;
                    let _ = self.store.delete(Collection::DirectoryIdentities, &key).await;
                    return Err(e.into());
                }
                user
            }
        };
        self.emit(
            EventKind::UserEnrolled,
            Outcome::Success,
            &user.name,
            Some(&link.provider),
            Some(source),
            format!(
                "passkey bound to directory identity issuer={} subject={}; roles from the directory: {}",
                link.issuer,
                link.subject,
                roles_text(&user.roles)
            ),
        );
        self.directory_session_opened(&user, &sign_in).await?;
        self.emit(
            EventKind::Login,
            Outcome::Success,
            &user.name,
            None,
            Some(source),
            format!("directory {} then passkey with user verification", link.provider),
        );
        let token = self.open_session(&user, Some(source)).await?;
        self.audit_committed().await?;
        Ok((user, token))
    }

    /// After the passkey: keeps what back-channel logout and the groups re-read need.
    pub(super) async fn directory_session_opened(
        &self,
        user: &User,
        sign_in: &DirectorySignIn,
    ) -> Result<(), IdentityError> {
        let link = &sign_in.link;
        let ttl = Duration::from_secs(tokens::MAX_SESSION_S);
        if let Some(sid) = &sign_in.idp_session {
            self.store.put_lasting(&idp_session_key(&link.issuer, sid), &user.id, ttl).await?;
        }
        let grant = DirectoryGrant {
            user_id: user.id.clone(),
            link: link.clone(),
            grant: sign_in.grant.clone(),
            checked_s: self.now_s(),
            failing_since_s: None,
            until_s: self.now_s() + tokens::MAX_SESSION_S,
        };
        self.store.put_lasting(&grant_key(&user.id), &grant, ttl).await?;
        Ok(())
    }

    /// Sets a directory account's roles and segments to what the directory gives now. Each
    /// change is a `role.directory_changed` record; a role lost, or a segment no longer reached,
    /// ends every session of the person at once. Returns whether one was lost.
    pub async fn sync_directory_access(
        &self,
        user_id: &str,
        access: &DirectoryAccess,
        occasion: &str,
        source: Option<IpAddr>,
    ) -> Result<bool, IdentityError> {
        let Some(before) = self.user(user_id).await? else { return Ok(false) };
        let roles = &access.roles;
        if before.directory.is_none() || (&before.roles == roles && before.segments == access.segments) {
            return Ok(false);
        }
        let target = access.clone();
        self.store
            .update::<User, _>(Collection::Users, user_id, |u| {
                let mut u = u?;
                u.roles = target.roles.clone();
                u.segments = target.segments.clone();
                Some(u)
            })
            .await?;
        let lost: BTreeSet<Role> = before.roles.difference(roles).copied().collect();
        let gained: BTreeSet<Role> = roles.difference(&before.roles).copied().collect();
        // Narrowed: from every segment the policy allows to some, or from some to fewer.
        let narrowed = match (&before.segments, &access.segments) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(was), Some(now)) => !was.is_subset(now),
        };
        let mut detail = format!(
            "on {occasion}: lost {} gained {} now {}",
            roles_text(&lost),
            roles_text(&gained),
            roles_text(roles)
        );
        if before.segments != access.segments {
            detail.push_str(&format!("; segments {}", segments_text(&access.segments)));
        }
        self.emit(EventKind::DirectoryRolesChanged, Outcome::Success, "directory", Some(&before.name), source, detail);
        let ended = !lost.is_empty() || narrowed;
        if ended {
            self.revoke_user_sessions_now(user_id).await?;
            let why = if lost.is_empty() {
                format!("segments narrowed in the directory to {}", segments_text(&access.segments))
            } else {
                format!("roles lost in the directory: {}", roles_text(&lost))
            };
            self.emit(EventKind::SessionsRevoked, Outcome::Success, "directory", Some(&before.name), source, why);
        }
        self.audit_committed().await?;
        Ok(ended)
    }

    /// The grants of directory accounts whose groups are due to be read again (checked more
    /// than `every_s` ago). Each is claimed by moving its `checked_s` forward, so that of
    /// several nodes one reads it.
    pub async fn directory_grants_due(&self, every_s: u64) -> Result<Vec<DirectoryGrant>, IdentityError> {
        let now = self.now_s();
        let mut due = Vec::new();
        for user in self.users().await?.into_iter().filter(|u| u.directory.is_some()) {
            let key = grant_key(&user.id);
            let Some(grant) = self.store.get_ephemeral::<DirectoryGrant>(&key).await? else { continue };
            if grant.checked_s + every_s > now || grant.until_s <= now {
                continue;
            }
            // Get-then-put: with several nodes two may read the same grant in the same tick
            // (issue 27 makes the claim atomic); the roles they apply are the same.
            let claimed = DirectoryGrant { checked_s: now, ..grant.clone() };
            let ttl = Duration::from_secs(grant.until_s.saturating_sub(now).max(1));
            self.store.put_lasting(&key, &claimed, ttl).await?;
            due.push(grant);
        }
        Ok(due)
    }

    /// Makes every live grant of `provider` due, so the re-read loop applies a new role table to
    /// each person at its next tick; returns how many there are.
    pub(super) async fn recheck_directory_soon(&self, provider: &str) -> Result<usize, IdentityError> {
        let now = self.now_s();
        let mut due = 0;
        for user in self.users().await?.into_iter().filter(|u| u.directory.is_some()) {
            let key = grant_key(&user.id);
            let Some(grant) = self.store.get_ephemeral::<DirectoryGrant>(&key).await? else { continue };
            if grant.link.provider != provider || grant.until_s <= now {
                continue;
            }
            let ttl = Duration::from_secs(grant.until_s.saturating_sub(now).max(1));
            self.store.put_lasting(&key, &DirectoryGrant { checked_s: 0, ..grant }, ttl).await?;
            due += 1;
        }
        Ok(due)
    }

    /// The outcome of reading a person's groups again: the new grant and roles, or why not.
    /// A definite refusal, or failures for `give_up_s` or longer, end the person's sessions (fail
    /// closed: roles the directory may have withdrawn are not kept on trust).
    pub async fn directory_recheck(
        &self,
        grant: &DirectoryGrant,
        outcome: Result<(serde_json::Value, DirectoryAccess), RecheckFailure>,
        give_up_s: u64,
    ) -> Result<(), IdentityError> {
        let now = self.now_s();
        let key = grant_key(&grant.user_id);
        let ttl = Duration::from_secs(grant.until_s.saturating_sub(now).max(1));
        match outcome {
            Ok((fresh, access)) => {
                // A new role table approved while this re-read was under way made the grant due
                // again (checked_s 0): it stays due, so the next tick applies that table.
                let marked = self.store.get_ephemeral::<DirectoryGrant>(&key).await?.is_some_and(|g| g.checked_s == 0);
                let checked_s = if marked { 0 } else { now };
                let kept = DirectoryGrant { grant: fresh, checked_s, failing_since_s: None, ..grant.clone() };
                self.store.put_lasting(&key, &kept, ttl).await?;
                self.sync_directory_access(&grant.user_id, &access, "groups re-read", None).await?;
            }
            Err(RecheckFailure { definite, why }) => {
                let since = grant.failing_since_s.unwrap_or(now);
                let name = self.user(&grant.user_id).await?.map(|u| u.name).unwrap_or_default();
                if definite || now.saturating_sub(since) >= give_up_s {
                    self.store.take_ephemeral::<DirectoryGrant>(&key).await?;
                    self.revoke_user_sessions_now(&grant.user_id).await?;
                    self.directory_refused(
                        &grant.link.provider,
                        Some(&name),
                        None,
                        "recheck_failed",
                        &format!("sessions ended: {why}"),
                    );
                } else {
                    let kept = DirectoryGrant { checked_s: now, failing_since_s: Some(since), ..grant.clone() };
                    self.store.put_lasting(&key, &kept, ttl).await?;
                    self.directory_refused(
                        &grant.link.provider,
                        Some(&name),
                        None,
                        "recheck_failed",
                        &format!("will retry: {why}"),
                    );
                }
                self.audit_committed().await?;
            }
        }
        Ok(())
    }

    /// A back-channel logout from the provider: ends every session of the person it names (by
    /// subject, or by the IdP session it recorded), on every node. `jti` works once.
    pub async fn directory_logout(
        &self,
        provider: &str,
        issuer: &str,
        subject: Option<&str>,
        idp_session: Option<&str>,
        jti: &str,
        source: IpAddr,
    ) -> Result<Option<String>, IdentityError> {
        self.audit_available()?;
        let seen = format!("sso-logout-jti:{}", directory_key(issuer, jti));
        if self.store.get_ephemeral::<u64>(&seen).await?.is_some() {
            self.directory_refused(provider, subject, Some(source), "replayed", &format!("jti={jti}"));
            self.audit_committed().await?;
            return Err(IdentityError::BadRequest("this logout token was already used".into()));
        }
        let by_subject = match subject {
            Some(s) => self.directory_user(issuer, s).await?,
            None => None,
        };
        let user = match by_subject {
            Some(u) => Some(u),
            None => match idp_session {
                Some(sid) => match self.store.get_ephemeral::<String>(&idp_session_key(issuer, sid)).await? {
                    Some(id) => self.user(&id).await?,
                    None => None,
                },
                None => None,
            },
        };
        // The token counts as used only once it has acted: a store failure before this point
        // lets the provider's retry through.
        let mark_used = async { self.store.put_lasting(&seen, &self.now_s(), Duration::from_secs(3600)).await };
        let Some(user) = user else {
            mark_used.await?;
            self.emit(
                EventKind::DirectoryLogout,
                Outcome::Success,
                "directory",
                Some(provider),
                Some(source),
                format!(
                    "no account for subject={} sid={}: nothing to end",
                    subject.unwrap_or("-"),
                    idp_session.unwrap_or("-")
                ),
            );
            self.audit_committed().await?;
            return Ok(None);
        };
        self.revoke_user_sessions_now(&user.id).await?;
        self.store.take_ephemeral::<DirectoryGrant>(&grant_key(&user.id)).await?;
        mark_used.await?;
        self.emit(
            EventKind::DirectoryLogout,
            Outcome::Success,
            "directory",
            Some(&user.name),
            Some(source),
            format!(
                "back-channel logout from {provider}: every session ended (subject={} sid={})",
                subject.unwrap_or("-"),
                idp_session.unwrap_or("-")
            ),
        );
        self.audit_committed().await?;
        Ok(Some(user.name))
    }
}

#[cfg(test)]
mod tests {
    use sightline_audit::events::MemorySink;
    use sightline_store::embedded::Embedded;

    use super::*;

    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    async fn identity(dir: &std::path::Path, local_accounts: bool) -> (Identity, MemorySink) {
        let events = MemorySink::default();
        let mut identity =
            for_tests(Store::new(Arc::new(Embedded::open(dir).unwrap())), Arc::new(events.clone())).await;
        identity.settings.local_accounts = local_accounts;
        (identity, events)
    }

    fn link(subject: &str) -> DirectoryLink {
        DirectoryLink { provider: "corp".into(), issuer: "https://idp.example".into(), subject: subject.into() }
    }

    /// A directory account as the first passkey leaves it (WebAuthn itself is proven in the browser).
    async fn directory_account(identity: &Identity, subject: &str, roles: &[Role]) -> User {
        let user = User {
            id: Uuid::new_v4().to_string(),
            name: subject.into(),
            display_name: subject.into(),
            roles: roles.iter().copied().collect(),
            passkeys: vec![],
            created_ms: 0,
            bootstrap: false,
            directory: Some(link(subject)),
            segments: None,
        };
        identity.put_user_unchecked(&user).await.unwrap();
        let key = directory_key(&link(subject).issuer, subject);
        identity.store.put(Collection::DirectoryIdentities, &key, &user.id).await.unwrap();
        user
    }

    fn kinds(events: &MemorySink, kind: EventKind) -> Vec<Event> {
        events.0.lock().unwrap().iter().filter(|e| e.kind == kind).cloned().collect()
    }

    fn sign_in(subject: &str, roles: &[Role]) -> DirectorySignIn {
        DirectorySignIn {
            link: link(subject),
            username: Some(subject.into()),
            groups: vec!["ops".into()],
            roles: roles.iter().copied().collect(),
            segments: None,
            idp_session: Some("sid-1".into()),
            grant: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn a_sign_in_whose_groups_give_no_role_is_refused_and_an_existing_account_loses_its_roles_and_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, events) = identity(dir.path(), true).await;
        // Unknown person, no role: refused, nothing created.
        assert!(matches!(
            identity.directory_sign_in(sign_in("bob", &[]), SOURCE).await,
            Err(IdentityError::Forbidden(_))
        ));
        assert!(identity.directory_user("https://idp.example", "bob").await.unwrap().is_none());
        let refused = kinds(&events, EventKind::DirectoryRefused);
        assert_eq!(refused[0].detail, "reason=no_mapped_group groups [ops] map to no role");

        // Known person with a live session, removed from the group: roles gone, session gone.
        let alice = directory_account(&identity, "alice", &[Role::Operator]).await;
        let token = identity.start_session(&alice).await.unwrap();
        assert!(identity.authenticate(&token).await.is_ok(), "control: the session works");
        assert!(identity.directory_sign_in(sign_in("alice", &[]), SOURCE).await.is_err());
        assert!(identity.user(&alice.id).await.unwrap().unwrap().roles.is_empty());
        assert!(identity.authenticate(&token).await.is_err());
        let changed = kinds(&events, EventKind::DirectoryRolesChanged);
        assert_eq!(changed[0].detail, "on sign-in: lost operator gained none now none");
        // The ticket is not handed out, and a good sign-in gets one that works once.
        let ticket = identity.directory_sign_in(sign_in("alice", &[Role::Operator]), SOURCE).await.unwrap();
        assert!(identity.directory_continue(&ticket, SOURCE).await.is_ok());
        assert!(matches!(identity.directory_continue(&ticket, SOURCE).await, Err(IdentityError::Unauthenticated)));
    }

    #[tokio::test]
    async fn a_role_gained_keeps_sessions_and_a_role_lost_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, events) = identity(dir.path(), true).await;
        let alice = directory_account(&identity, "alice", &[Role::Operator]).await;
        let token = identity.start_session(&alice).await.unwrap();
        let gained = BTreeSet::from([Role::Operator, Role::Observer]);
        let access = |roles: BTreeSet<Role>| DirectoryAccess { roles, segments: None };
        assert!(!identity.sync_directory_access(&alice.id, &access(gained), "groups re-read", None).await.unwrap());
        assert!(identity.authenticate(&token).await.unwrap().user.roles.contains(&Role::Observer));
        assert!(
            identity
                .sync_directory_access(&alice.id, &access(BTreeSet::from([Role::Observer])), "groups re-read", None)
                .await
                .unwrap()
        );
        assert!(identity.authenticate(&token).await.is_err());
        let details: Vec<String> =
            kinds(&events, EventKind::DirectoryRolesChanged).into_iter().map(|e| e.detail).collect();
        assert_eq!(
            details,
            [
                "on groups re-read: lost none gained observer now operator,observer",
                "on groups re-read: lost operator gained none now observer"
            ]
        );
        // Local accounts are never touched by the directory.
        let local = User { directory: None, id: "local".into(), name: "lo".into(), ..alice.clone() };
        identity.put_user_unchecked(&local).await.unwrap();
        assert!(
            !identity.sync_directory_access("local", &access(BTreeSet::new()), "groups re-read", None).await.unwrap()
        );
        assert_eq!(identity.user("local").await.unwrap().unwrap().roles, alice.roles);
    }

    #[tokio::test]
    async fn segments_narrowed_by_the_directory_end_the_sessions_and_widened_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, events) = identity(dir.path(), true).await;
        let names = |s: &[&str]| -> BTreeSet<String> { s.iter().map(|s| s.to_string()).collect() };
        let alice = directory_account(&identity, "alice", &[Role::Operator]).await;
        let alice = User { segments: Some(names(&["office", "branch"])), ..alice };
        identity.put_user_unchecked(&alice).await.unwrap();
        let bob = directory_account(&identity, "bob", &[Role::Operator]).await;
        let at =
            |segments: Option<&[&str]>| DirectoryAccess { roles: alice.roles.clone(), segments: segments.map(&names) };
        let sync = async |user: &User, access: DirectoryAccess| {
            identity.sync_directory_access(&user.id, &access, "groups re-read", None).await.unwrap()
        };
        // Sessions begun before any change.
        let alice_token = identity.start_session(&alice).await.unwrap();
        let bob_token = identity.start_session(&bob).await.unwrap();
        // Widened (a third segment, then no narrowing at all): the session stays.
        assert!(!sync(&alice, at(Some(&["office", "branch", "servers"]))).await);
        assert!(!sync(&alice, at(None)).await);
        assert!(identity.authenticate(&alice_token).await.is_ok());
        // The same again changes nothing and records nothing.
        assert!(!sync(&alice, at(None)).await);
        // From every segment to one: narrowed, the session ends.
        assert!(sync(&alice, at(Some(&["office"]))).await);
        assert!(identity.authenticate(&alice_token).await.is_err());
        // A session begun after the revocation stands: revocations go by the millisecond.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let again = identity.start_session(&alice).await.unwrap();
        assert!(identity.authenticate(&again).await.is_ok());
        assert_eq!(identity.user(&alice.id).await.unwrap().unwrap().segments, Some(names(&["office"])));
        // From some to fewer: narrowed too.
        assert!(sync(&bob, at(Some(&["office", "branch"]))).await);
        assert!(identity.authenticate(&bob_token).await.is_err());
        assert!(sync(&bob, at(Some(&["branch"]))).await);
        let details: Vec<(Option<String>, String)> =
            kinds(&events, EventKind::DirectoryRolesChanged).into_iter().map(|e| (e.subject, e.detail)).collect();
        let line = |who: &str, segments: &str| {
            (
                Some(who.to_string()),
                format!("on groups re-read: lost none gained none now operator; segments {segments}"),
            )
        };
        assert_eq!(
            details,
            [
                line("alice", "[branch,office,servers]"),
                line("alice", "not narrowed"),
                line("alice", "[office]"),
                line("bob", "[branch,office]"),
                line("bob", "[branch]"),
            ]
        );
        let revoked: Vec<String> = kinds(&events, EventKind::SessionsRevoked).into_iter().map(|e| e.detail).collect();
        assert_eq!(
            revoked,
            [
                "segments narrowed in the directory to [office]",
                "segments narrowed in the directory to [branch,office]",
                "segments narrowed in the directory to [branch]"
            ]
        );
    }

    #[tokio::test]
    async fn failing_rereads_end_the_sessions_after_the_grace_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, events) = identity(dir.path(), true).await;
        let alice = directory_account(&identity, "alice", &[Role::Operator]).await;
        identity.directory_session_opened(&alice, &sign_in("alice", &[Role::Operator])).await.unwrap();
        let token = identity.start_session(&alice).await.unwrap();
        let grant = identity.store.get_ephemeral::<DirectoryGrant>(&grant_key(&alice.id)).await.unwrap().unwrap();
        identity
            .directory_recheck(&grant, Err(RecheckFailure { definite: false, why: "provider_unavailable".into() }), 600)
            .await
            .unwrap();
        assert!(identity.authenticate(&token).await.is_ok(), "within the grace, the session stays");
        let failing = identity.store.get_ephemeral::<DirectoryGrant>(&grant_key(&alice.id)).await.unwrap().unwrap();
        assert!(failing.failing_since_s.is_some());
        // With no grace left, the sessions end and the grant is dropped.
        identity
            .directory_recheck(&failing, Err(RecheckFailure { definite: false, why: "provider_unavailable".into() }), 0)
            .await
            .unwrap();
        assert!(identity.authenticate(&token).await.is_err());
        assert!(identity.store.get_ephemeral::<DirectoryGrant>(&grant_key(&alice.id)).await.unwrap().is_none());
        // A definite refusal (the person disabled at the provider) ends them at once, grace or not.
        let bob = directory_account(&identity, "bob", &[Role::Operator]).await;
        identity.directory_session_opened(&bob, &sign_in("bob", &[Role::Operator])).await.unwrap();
        let bob_token = identity.start_session(&bob).await.unwrap();
        let bob_grant = identity.store.get_ephemeral::<DirectoryGrant>(&grant_key(&bob.id)).await.unwrap().unwrap();
        let refused = RecheckFailure { definite: true, why: "provider_error: invalid_grant".into() };
        identity.directory_recheck(&bob_grant, Err(refused), 600).await.unwrap();
        assert!(identity.authenticate(&bob_token).await.is_err());
        let refused: Vec<String> = kinds(&events, EventKind::DirectoryRefused).into_iter().map(|e| e.detail).collect();
        assert_eq!(
            refused,
            [
                "reason=recheck_failed will retry: provider_unavailable",
                "reason=recheck_failed sessions ended: provider_unavailable",
                "reason=recheck_failed sessions ended: provider_error: invalid_grant"
            ]
        );
    }

    #[tokio::test]
    async fn back_channel_logout_ends_the_persons_sessions_by_subject_or_idp_session_and_works_once() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, events) = identity(dir.path(), true).await;
        let alice = directory_account(&identity, "alice", &[Role::Operator]).await;
        identity.directory_session_opened(&alice, &sign_in("alice", &[Role::Operator])).await.unwrap();
        let token = identity.start_session(&alice).await.unwrap();
        // By IdP session only.
        let ended =
            identity.directory_logout("corp", "https://idp.example", None, Some("sid-1"), "j1", SOURCE).await.unwrap();
        assert_eq!(ended.as_deref(), Some("alice"));
        assert!(identity.authenticate(&token).await.is_err());
        // The same token again is refused; a token naming nobody known ends nothing.
        assert!(
            identity.directory_logout("corp", "https://idp.example", Some("alice"), None, "j1", SOURCE).await.is_err()
        );
        assert_eq!(
            identity.directory_logout("corp", "https://idp.example", Some("nobody"), None, "j2", SOURCE).await.unwrap(),
            None
        );
        let logouts = kinds(&events, EventKind::DirectoryLogout);
        assert_eq!(logouts.len(), 2);
        assert_eq!(logouts[0].subject.as_deref(), Some("alice"));
        assert_eq!(kinds(&events, EventKind::DirectoryRefused)[0].detail, "reason=replayed jti=j1");
    }

    #[tokio::test]
    async fn with_local_accounts_forbidden_invited_accounts_neither_sign_in_nor_are_invited() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = identity(dir.path(), false).await;
        assert!(identity.bootstrap_token().await.unwrap().is_none());
        let admin = directory_account(&identity, "root", &[Role::Admin]).await;
        let token = identity.start_session(&admin).await.unwrap();
        let auth = identity.authenticate(&token).await.unwrap();
        assert!(matches!(identity.invite(&auth, "olga", Role::Operator, None).await, Err(IdentityError::Forbidden(_))));
        // A local account's session ends (the directory account's, above, is the control).
        let local = User { directory: None, id: "local".into(), name: "lo".into(), ..admin.clone() };
        identity.put_user_unchecked(&local).await.unwrap();
        let local_token = identity.start_session(&local).await.unwrap();
        assert!(matches!(identity.authenticate(&local_token).await, Err(IdentityError::Unauthenticated)));
        assert!(
            !identity
                .session_alive(
                    &identity.keyring().verify(&identity.settings.tokens, &local_token, identity.now_s()).unwrap()
                )
                .await
                .unwrap()
        );
        // (Signing in by name is refused for local and directory accounts alike: sso.spec.ts,
        // with real passkeys.)
    }
}
