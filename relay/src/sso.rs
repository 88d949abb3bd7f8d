//! The node's identity providers (R12): loaded from `--sso-config` at start (the relay does not
//! start if one cannot be discovered, or if the file's role table is one the admins never
//! approved: `Identity::settle_role_mapping`), and the loop that re-reads signed-in people's
//! groups. Roles come from the table in force in the store, read at each sign-in and re-read, so
//! a change two admins approved holds on every node at once.
//!
//! Every `recheck_s` (60..=900 s, default 300) each directory account with a live grant has its
//! groups read again from its provider's userinfo endpoint (refreshing the access token when it
//! has expired and the provider gave a refresh token); the roles follow, and a role lost ends the
//! person's sessions on every node (`Identity::sync_directory_roles`). So a person removed from a
//! group loses the role within `recheck_s` plus one tick (15 s). When the provider cannot be asked
//! twice in a row (an outage), or answers no (the person disabled, the refresh token refused), the
//! person's sessions end: roles are not kept on trust.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sightline_core::role_mapping::TableLimits;
use sightline_identity::{DirectoryAccess, DirectoryGrant, Identity, IdentityError, RecheckFailure};
use sightline_sso::{Grant, Provider, SsoConfig};

/// How often the loop looks for grants that are due.
const TICK: Duration = Duration::from_secs(15);

pub struct Sso {
    providers: BTreeMap<String, Arc<Provider>>,
    pub config: SsoConfig,
    /// Where the provider sends the browser back after its logout: the relay's front page.
    public_url: url::Url,
    /// Each provider's role table in force when the node started (fingerprint), for its record.
    settled: BTreeMap<String, String>,
    /// The segments of the node's policy: the only ones a table may narrow people to.
    known_segments: BTreeSet<String>,
}

impl Sso {
    /// Reads the SSO file and discovers every provider in it.
    pub async fn start(path: &std::path::Path, public_url: &url::Url) -> anyhow::Result<Sso> {
        let config = SsoConfig::load(path).with_context(|| format!("invalid SSO file {}", path.display()))?;
        let mut providers = BTreeMap::new();
        for p in &config.providers {
            let redirect = public_url.join(&format!("/api/sso/{}/callback", p.name))?;
            let provider = Provider::discover(p.clone(), redirect).await?;
            tracing::info!(provider = %p.name, issuer = %p.issuer, "identity provider ready");
            providers.insert(p.name.clone(), Arc::new(provider));
        }
        Ok(Sso {
            providers,
            config,
            public_url: public_url.clone(),
            settled: BTreeMap::new(),
            known_segments: BTreeSet::new(),
        })
    }

    /// Settles each provider's role table with the one in force, within the policy's
    /// `segments`; refuses to go on if the file says something the admins never approved.
    pub async fn settle(&mut self, identity: &Identity, segments: BTreeSet<String>) -> anyhow::Result<()> {
        self.known_segments = segments;
        for p in &self.config.providers {
            let limits = self.limits(&p.name).expect("a configured provider");
            let table = identity
                .settle_role_mapping(&p.name, p.issuer.as_str(), &p.mapping, &limits)
                .await
                .map_err(anyhow::Error::msg)?;
            tracing::info!(provider = %p.name, in_force = %table.fingerprint(), file = %p.mapping.fingerprint(), "role table settled");
            self.settled.insert(p.name.clone(), table.fingerprint());
        }
        Ok(())
    }

    /// What bounds provider `name`'s table on this node (`None`: no such provider): whether a
    /// group may grant `admin`, and the policy's segments.
    pub fn limits(&self, name: &str) -> Option<TableLimits> {
        let provider = self.config.providers.iter().find(|p| p.name == name)?;
        Some(TableLimits {
            admin_allowed: provider.mapping.admin_allowed(),
            known_segments: self.known_segments.clone(),
        })
    }

    /// Where the browser of a person of provider `name` goes after signing out of the relay, to
    /// end their session at the provider too (RP-initiated logout), if the provider offers it.
    pub fn end_session_url(&self, name: &str) -> Option<url::Url> {
        self.providers.get(name)?.end_session_url(&self.public_url)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    /// The roles and segments `groups` give at provider `name`, by the table in force (refused
    /// when there is none, or it is beyond this node's limits: fail closed).
    pub async fn access_for(
        &self,
        identity: &Identity,
        name: &str,
        groups: &[String],
    ) -> Result<DirectoryAccess, IdentityError> {
        let limits = self.limits(name).ok_or(IdentityError::NotFound)?;
        let table = identity.role_mapping(name, &limits).await?;
        let groups = || groups.iter().map(String::as_str);
        Ok(DirectoryAccess { roles: table.roles_for(groups()), segments: table.segments_for(groups()) })
    }

    /// For the node's start record: each provider's issuer, the role table in force and the
    /// file's (fingerprints), and whether a group may grant admin.
    pub fn describe(&self) -> serde_json::Value {
        self.providers
            .values()
            .map(|p| {
                (
                    p.config.name.clone(),
                    serde_json::json!({
                        "issuer": p.config.issuer.as_str(),
                        "roles_sha256": self.settled.get(&p.config.name),
                        "file_roles_sha256": p.config.mapping.fingerprint(),
                        "admin_from_directory": p.config.mapping.admin_allowed(),
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Re-reads groups as they fall due, until the node stops.
    pub async fn run_rechecks(self: Arc<Self>, identity: Arc<Identity>) {
        let every = self.config.recheck_s;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let due = match identity.directory_grants_due(every).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list directory grants to re-read");
                    continue;
                }
            };
            for grant in due {
                let outcome = self.reread(&identity, &grant, identity.now_ms() / 1000).await;
                // An outage is given one more period; a second failure in a row ends the sessions.
                if let Err(e) = identity.directory_recheck(&grant, outcome, every).await {
                    tracing::warn!(error = %e, user = %grant.user_id, "cannot apply a groups re-read");
                }
            }
        }
    }

    async fn reread(
        &self,
        identity: &Identity,
        grant: &DirectoryGrant,
        now_s: u64,
    ) -> Result<(serde_json::Value, DirectoryAccess), RecheckFailure> {
        let definite = |why: String| RecheckFailure { definite: true, why };
        let provider = self
            .providers
            .get(&grant.link.provider)
            .ok_or_else(|| definite(format!("provider {:?} is no longer configured", grant.link.provider)))?;
        let held: Grant =
            serde_json::from_value(grant.grant.clone()).map_err(|e| definite(format!("stored grant: {e}")))?;
        let (groups, fresh) = provider.groups(&held, &grant.link.subject, now_s).await.map_err(|e| RecheckFailure {
            definite: !matches!(e, sightline_sso::Refusal::ProviderUnavailable(_)),
            why: format!("{}: {e}", e.code()),
        })?;
        let access = self.access_for(identity, &grant.link.provider, &groups).await.map_err(|e| RecheckFailure {
            // The store out is an outage; a table beyond this node's ceiling is definite.
            definite: !matches!(e, IdentityError::Store(_)),
            why: format!("role table: {e}"),
        })?;
        Ok((serde_json::to_value(fresh).map_err(|e| definite(e.to_string()))?, access))
    }
}
