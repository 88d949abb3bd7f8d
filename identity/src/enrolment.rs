//! Enrolment: one-time tokens (bootstrap, invitations, agent tokens), the WebAuthn ceremony
//! state, users, and a user's first passkey.
//!
//! A relay without users prints a one-time admin enrolment link (72 h) at each start, replacing
//! the previous one (with several nodes, the most recently printed link is the valid one). The
//! link opens the viewer's enrolment page; the browser creates a passkey (user verification
//! required) and the relay creates the first admin. Admins invite people with one role each;
//! every invitation is a one-time link (72 h). Tokens are 256 random bits, stored only as SHA-256
//! hashes, and taken once, only when a verified passkey (or, for agent tokens, a device key) is
//! in hand; an agent presenting a person's link does not burn it. An invitation's role applies at
//! enrolment only while there is a single admin who is still an admin (the bootstrap phase, an
//! audited exception); with two or more admins the new account starts without roles and the grant
//! waits, as a role request by the inviter, for another admin (`role_changes`).

use super::*;

impl Identity {
    pub(super) async fn create_token(&self, purpose: TokenPurpose, ttl_ms: u64) -> Result<String, IdentityError> {
        // A fixed prefix: recognisable in logs and tickets, and never mistaken for a CLI flag.
        let token = format!("sl_{}", random_token());
        let record = EnrolmentToken { purpose, expires_ms: self.now_ms() + ttl_ms };
        self.store.put(Collection::EnrolmentTokens, &token_hash(&token), &record).await?;
        Ok(token)
    }

    /// On a relay with no users, replaces any earlier bootstrap token with a fresh one and
    /// returns it; `None` once someone has enrolled.
    pub async fn bootstrap_token(&self) -> Result<Option<String>, IdentityError> {
        // With local accounts switched off, the first admin comes from the directory.
        if !self.local_accounts_allowed() {
            return Ok(None);
        }
        if !self.store.list::<User>(Collection::Users).await?.is_empty() {
            return Ok(None);
        }
        for (hash, token) in self.store.list::<EnrolmentToken>(Collection::EnrolmentTokens).await? {
            if token.purpose == TokenPurpose::BootstrapAdmin {
                self.store.delete(Collection::EnrolmentTokens, &hash).await?;
            }
        }
        let token = self.create_token(TokenPurpose::BootstrapAdmin, INVITE_TTL_MS).await?;
        self.emit(
            EventKind::BootstrapAdmin,
            Outcome::Success,
            "system",
            None,
            None,
            "one-time admin enrolment link issued",
        );
        Ok(Some(token))
    }

    pub fn enrolment_link(&self, token: &str) -> String {
        let mut url = self.settings.public_url.clone();
        url.set_fragment(Some(&format!("/enrol/{token}")));
        url.to_string()
    }

    /// Looks a token up; `consume` takes it for good, so a second taker (or a replay) fails.
    pub(super) async fn enrolment_token(&self, token: &str, consume: bool) -> Result<EnrolmentToken, IdentityError> {
        let key = token_hash(token);
        let record: Option<EnrolmentToken> = if consume {
            self.store.take(Collection::EnrolmentTokens, &key).await?
        } else {
            self.store.get(Collection::EnrolmentTokens, &key).await?
        };
        let record = record
            .ok_or_else(|| IdentityError::BadRequest("this enrolment link is unknown or was already used".into()))?;
        if record.expires_ms < self.now_ms() {
            return Err(IdentityError::BadRequest("this enrolment link has expired".into()));
        }
        Ok(record)
    }

    pub(super) async fn peek_token(&self, token: &str) -> Result<EnrolmentToken, IdentityError> {
        self.enrolment_token(token, false).await
    }

    pub(super) async fn consume_token(&self, token: &str) -> Result<EnrolmentToken, IdentityError> {
        self.enrolment_token(token, true).await
    }

    /// Stores a user record as given, bypassing invitations and approvals: for in-process
    /// harnesses only (the HTTP API never calls it).
    pub async fn put_user_unchecked(&self, user: &User) -> Result<(), IdentityError> {
        self.store.put(Collection::UserNames, &user.name, &user.id).await?;
        self.store.put(Collection::Users, &user.id, user).await?;
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<User>, IdentityError> {
        let mut users: Vec<User> =
            self.store.list::<User>(Collection::Users).await?.into_iter().map(|(_, u)| u).collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, IdentityError> {
        Ok(self.store.get(Collection::Users, id).await?)
    }

    pub(super) async fn user_by_name(&self, name: &str) -> Result<Option<User>, IdentityError> {
        let Some(id) = self.store.get::<String>(Collection::UserNames, name).await? else { return Ok(None) };
        self.user(&id).await
    }

    /// An admin invites a person with one role; returns the enrolment link.
    pub async fn invite(
        &self,
        admin: &AuthUser,
        name: &str,
        role: Role,
        source: Option<IpAddr>,
    ) -> Result<String, IdentityError> {
        require(admin, roles::Capability::Administer)?;
        self.refuse_local()?;
        let name = valid_name(name)?;
        if self.user_by_name(&name).await?.is_some() {
            return Err(IdentityError::Conflict(format!("a user named {name:?} exists")));
        }
        let token = self
            .create_token(
                TokenPurpose::Invite { name: name.clone(), role, invited_by: admin.user.id.clone() },
                INVITE_TTL_MS,
            )
            .await?;
        self.emit(
            EventKind::UserInvited,
            Outcome::Success,
            &admin.user.name,
            Some(&name),
            source,
            format!("role {}", role.as_str()),
        );
        // The link is handed out only once its record is durable, as every enrolment token.
        self.audit_committed().await?;
        Ok(self.enrolment_link(&token))
    }

    /// Starts passkey registration for the holder of an enrolment link.
    pub async fn start_enrolment(
        &self,
        token: &str,
        display_name: Option<&str>,
        source: IpAddr,
    ) -> Result<(String, CreationChallengeResponse), IdentityError> {
        self.audit_available()?;
        self.ceremony_budget(source)?;
        let record = self.peek_token(token).await?;
        if matches!(record.purpose, TokenPurpose::BootstrapAdmin | TokenPurpose::Invite { .. }) {
            self.refuse_local()?;
        }
        let typed = display_name.map(str::trim).filter(|n| !n.is_empty());
        let name = match &record.purpose {
            // Never a name made up for them: the first administrator chooses one.
            TokenPurpose::BootstrapAdmin => valid_name(typed.ok_or_else(|| {
                IdentityError::BadRequest("the first administrator chooses a user name: type one".into())
            })?)?,
            // The invitation names its holder; a different name typed is refused, not ignored.
            TokenPurpose::Invite { name, .. } => match typed {
                Some(other) if other != name => {
                    return Err(IdentityError::BadRequest(format!(
                        "this invitation is for {name:?}: leave the user name empty or type that name"
                    )));
                }
                _ => name.clone(),
            },
            TokenPurpose::Agent { .. } | TokenPurpose::Rekey { .. } => {
                return Err(IdentityError::BadRequest("this is an agent enrolment token".into()));
            }
        };
        if self.user_by_name(&name).await?.is_some() {
            return Err(IdentityError::Conflict(format!("a user named {name:?} exists")));
        }
        let user_id = Uuid::new_v4();
        let (challenge, state) = self
            .webauthn
            .start_passkey_registration(user_id, &name, &name, None)
            .map_err(|e| IdentityError::BadRequest(format!("cannot start registration: {e}")))?;
        let ceremony = Ceremony::Enrol {
            token_hash: token_hash(token),
            user_id: user_id.to_string(),
            name: name.clone(),
            display_name: name,
            state,
        };
        Ok((self.begin_ceremony(&ceremony).await?, challenge))
    }

    /// Finishes registration: consumes the link, creates the user, starts a session.
    pub async fn finish_enrolment(
        &self,
        token: &str,
        ceremony_id: &str,
        credential: &RegisterPublicKeyCredential,
        source: Option<IpAddr>,
    ) -> Result<(User, String), IdentityError> {
        let Some(Ceremony::Enrol { token_hash: expected_hash, user_id, name, display_name, state }) =
            self.take_ceremony(ceremony_id).await?
        else {
            return Err(IdentityError::BadRequest("enrolment expired or unknown; open the link again".into()));
        };
        if expected_hash != token_hash(token) {
            return Err(IdentityError::BadRequest("enrolment does not match this link".into()));
        }
        let passkey = self.webauthn.finish_passkey_registration(credential, &state).map_err(|e| {
            self.emit(
                EventKind::UserEnrolled,
                Outcome::Failure,
                &name,
                None,
                source,
                format!("passkey registration failed: {e}"),
            );
            IdentityError::BadRequest("the passkey could not be registered (user verification is required)".into())
        })?;
        // The link is consumed only now, with a verified passkey in hand, and only once.
        let record = self.consume_token(token).await?;
        // An invitation's role applies at once only in the bootstrap phase (one admin, who must
        // still be an admin): that is the audited exception. With two or more admins the new
        // account starts without roles and the grant waits for an admin other than the inviter.
        let mut pending: Option<(Role, String)> = None;
        let (roles, bootstrap) = match &record.purpose {
            TokenPurpose::BootstrapAdmin => (BTreeSet::from([Role::Admin]), true),
            TokenPurpose::Invite { role, invited_by, .. } => {
                let inviter_is_admin = self.user(invited_by).await?.is_some_and(|u| u.roles.contains(&Role::Admin));
                if !inviter_is_admin {
                    return Err(IdentityError::Forbidden("the admin who sent this invitation no longer is one".into()));
                }
                if self.admin_count().await? <= 1 {
                    (BTreeSet::from([*role]), false)
                } else {
                    pending = Some((*role, invited_by.clone()));
                    (BTreeSet::new(), false)
                }
            }
            TokenPurpose::Agent { .. } | TokenPurpose::Rekey { .. } => {
                return Err(IdentityError::BadRequest("this is an agent enrolment token".into()));
            }
        };
        if !self.store.insert_new(Collection::UserNames, &name, &user_id).await? {
            return Err(IdentityError::Conflict(format!("a user named {name:?} exists")));
        }
        let user = User {
            id: user_id,
            name,
            display_name,
            roles,
            passkeys: vec![passkey],
            created_ms: self.now_ms(),
            bootstrap,
            directory: None,
            segments: None,
        };
        self.store.put(Collection::Users, &user.id, &user).await?;
        let detail = match (&record.purpose, &pending) {
            (TokenPurpose::BootstrapAdmin, _) => {
                "first admin from the bootstrap link (audited exception to two-admin grants)".to_owned()
            }
            (TokenPurpose::Invite { role, invited_by, .. }, None) => {
                format!(
                    "role {} by invitation of {invited_by} (single-admin bootstrap phase: audited exception)",
                    role.as_str()
                )
            }
            (TokenPurpose::Invite { role, invited_by, .. }, Some(_)) => {
                format!("no role yet: grant of {} requested by {invited_by} awaits a second admin", role.as_str())
            }
            (TokenPurpose::Agent { .. } | TokenPurpose::Rekey { .. }, _) => String::new(),
        };
        if let Some((role, inviter_id)) = pending {
            let inviter_name = self.user(&inviter_id).await?.map(|u| u.name).unwrap_or_default();
            let req = RoleRequest {
                id: hex::encode(random_bytes::<8>()),
                target_id: user.id.clone(),
                target_name: user.name.clone(),
                change: RoleChange::Grant(role),
                requested_by: inviter_id,
                requested_by_name: inviter_name.clone(),
                created_ms: self.now_ms(),
            };
            self.store.put(Collection::RoleRequests, &req.id, &req).await?;
            self.emit(
                EventKind::RoleChangeRequested,
                Outcome::Success,
                &inviter_name,
                Some(&user.name),
                source,
                describe(req.change),
            );
        }
        self.emit(EventKind::UserEnrolled, Outcome::Success, &user.name, None, source, detail);
        let token = self.open_session(&user, source).await?;
        self.audit_committed().await?;
        Ok((user, token))
    }

    pub async fn create_agent_token(
        &self,
        actor: &str,
        segment: &str,
        source: Option<IpAddr>,
    ) -> Result<String, IdentityError> {
        let segment = valid_name(segment)?;
        self.audit_available()?;
        let token = self
            .create_token(
                TokenPurpose::Agent { segment: segment.clone(), created_by: actor.to_owned() },
                AGENT_TOKEN_TTL_MS,
            )
            .await?;
        self.emit(
            EventKind::DeviceTokenCreated,
            Outcome::Success,
            actor,
            None,
            source,
            format!("segment {segment}; token {}", token_id(&token)),
        );
        self.audit_committed().await?;
        Ok(token)
    }

    /// A one-time token (24 h) with which enrolled device `device_id` takes a new key, keeping its
    /// id, name and segment (its endpoint was reinstalled, or its key lost). Needs a step-up: a
    /// key change decides whose signatures count as the device's.
    pub async fn create_rekey_token(
        &self,
        auth: &crate::AuthUser,
        device_id: &str,
        source: Option<IpAddr>,
    ) -> Result<String, IdentityError> {
        crate::require(auth, sightline_core::roles::Capability::Administer)?;
        let device = self.device(device_id).await?.ok_or(IdentityError::NotFound)?;
        self.require_step_up(auth).await?;
        if device.revoked {
            return Err(IdentityError::Conflict("a revoked device takes no new key: enrol a new one".into()));
        }
        self.audit_available()?;
        let actor = &auth.user.name;
        let purpose = TokenPurpose::Rekey { device_id: device.id.clone(), created_by: actor.clone() };
        let token = self.create_token(purpose, AGENT_TOKEN_TTL_MS).await?;
        self.emit(
            EventKind::DeviceTokenCreated,
            Outcome::Success,
            actor,
            Some(&format!("device:{}", device.id)),
            source,
            format!("new key for {}; token {}", device.name, token_id(&token)),
        );
        self.audit_committed().await?;
        Ok(token)
    }

    /// The invitations and agent tokens not yet used and not expired, for the admin's page: what
    /// each is for, who made it, until when. Never the token itself (only its stored hash's
    /// prefix, the id the audit records use).
    pub async fn pending_enrolments(&self) -> Result<Vec<PendingEnrolment>, IdentityError> {
        let now = self.now_ms();
        let mut pending = Vec::new();
        for (hash, t) in self.store.list::<EnrolmentToken>(Collection::EnrolmentTokens).await? {
            if t.expires_ms <= now {
                continue;
            }
            let id = hash.get(..16).unwrap_or(&hash).to_owned();
            let (kind, subject, created_by) = match t.purpose {
                TokenPurpose::BootstrapAdmin => continue,
                TokenPurpose::Invite { name, role, invited_by } => {
                    // Invitations keep the inviter's id: the page names them.
                    let inviter = self.user(&invited_by).await?.map_or(invited_by, |u| u.name);
                    ("invitation", format!("{name} as {}", role.as_str()), inviter)
                }
                TokenPurpose::Agent { segment, created_by } => {
                    ("agent token", format!("segment {segment}"), created_by)
                }
                TokenPurpose::Rekey { device_id, created_by } => ("new key", format!("device {device_id}"), created_by),
            };
            pending.push(PendingEnrolment { id, kind: kind.into(), subject, created_by, expires_ms: t.expires_ms });
        }
        pending.sort_by_key(|p| p.expires_ms);
        Ok(pending)
    }
}

/// An enrolment link or token waiting to be used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingEnrolment {
    pub id: String,
    /// `invitation`, `agent token` or `new key`.
    pub kind: String,
    /// Who or what it enrols.
    pub subject: String,
    pub created_by: String,
    pub expires_ms: u64,
}
