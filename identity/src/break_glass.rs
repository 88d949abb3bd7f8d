//! Break-glass sign-in on one node (R43): a sealed one-time code spent on the node's disk, a
//! sign-in held in the node's memory, and no store anywhere on the way, since the store being
//! down is when it is needed. The rules (who, which code, what such a person may do) are in
//! `sightline_core::break_glass`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sightline_audit::events::{EventKind, Outcome};
use sightline_core::break_glass::{self as rules, BreakGlassRules, Refusal};
use sightline_core::roles::Role;

use crate::tokens::{self, Claims};
use crate::{AuthUser, Identity, IdentityError, User};

/// The audience of break-glass tokens: no other check takes them, and they take no other path.
pub const BREAK_GLASS_AUDIENCE: &str = "sightline-break-glass";

/// The file in the data directory that lists the SHA-256 of every code this node spent.
pub const SPENT_FILE: &str = "break-glass-spent";

/// A break-glass sign-in this node holds.
#[derive(Debug, Clone)]
struct Live {
    holder: String,
    began_s: u64,
}

/// The node's break-glass codes, the ones it spent, and the sign-ins it holds.
#[derive(Debug)]
pub struct BreakGlassDesk {
    node: String,
    rules: BreakGlassRules,
    spent_path: PathBuf,
    spent: Mutex<BTreeSet<String>>,
    live: Mutex<HashMap<String, Live>>,
}

impl BreakGlassDesk {
    /// Reads the codes this node spent before (a missing file: none yet).
    pub fn open(node: &str, rules: BreakGlassRules, data_dir: &Path) -> std::io::Result<BreakGlassDesk> {
        let spent_path = data_dir.join(SPENT_FILE);
        let spent = match std::fs::read_to_string(&spent_path) {
            Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(BreakGlassDesk {
            node: node.to_owned(),
            rules,
            spent_path,
            spent: Mutex::new(spent),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Whether anyone is signed in through break-glass on this node now.
    pub fn anyone_in(&self, now_s: u64) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, l| l.began_s + rules::MAX_SIGN_IN_S > now_s);
        !live.is_empty()
    }

    /// Writes the code's hash to the spent file and syncs it, before the code opens anything:
    /// a code the node cannot spend is not accepted.
    fn spend(&self, digest: &str) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.spent_path)?;
        file.write_all(format!("{digest}\n").as_bytes())?;
        file.sync_all()?;
        if let Some(dir) = self.spent_path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn alive(&self, sid: &str, now_s: u64) -> Option<Live> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(sid).filter(|l| l.began_s + rules::MAX_SIGN_IN_S > now_s).cloned()
    }
}

/// The account a break-glass sign-in acts as: an operator named after the holder, with nothing
/// in the store.
fn user_of(holder: &str, began_s: u64) -> User {
    let actor = rules::actor(holder);
    User {
        id: actor.clone(),
        name: actor,
        display_name: format!("{holder} (break-glass)"),
        roles: BTreeSet::from([Role::Operator]),
        passkeys: Vec::new(),
        created_ms: began_s * 1000,
        bootstrap: false,
        directory: None,
        segments: None,
    }
}

impl Identity {
    /// Sets up break-glass sign-in on this node (once, at start).
    pub fn set_break_glass(&self, desk: BreakGlassDesk) {
        if self.break_glass.set(desk).is_err() {
            tracing::warn!("break-glass was set up twice; the first stands");
        }
    }

    /// Whether someone is signed in through break-glass on this node now.
    pub fn break_glass_in_use(&self) -> bool {
        self.break_glass.get().is_some_and(|d| d.anyone_in(self.now_s()))
    }

    fn break_glass_tokens(&self) -> tokens::TokenSettings {
        tokens::TokenSettings { audience: BREAK_GLASS_AUDIENCE.into(), ..self.settings.tokens.clone() }
    }

    /// Whether the store answers within `within` (a read of a key nobody writes).
    pub async fn store_reachable(&self, within: std::time::Duration) -> Result<(), String> {
        match tokio::time::timeout(within, self.store.get_ephemeral::<u64>("reachability-probe")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", within.as_secs())),
        }
    }

    /// Signs `holder` in with `code`, when `normal_sign_in_works` is false (the store or the
    /// identity provider is down). The code is spent on disk before anything else, and the
    /// sign-in's record emitted; the caller hands the token out only once that is committed.
    /// Every refusal is recorded too.
    pub async fn break_glass_sign_in(
        &self,
        holder: &str,
        code: &str,
        source: IpAddr,
        normal_sign_in_works: bool,
        why_needed: &str,
    ) -> Result<(String, AuthUser), IdentityError> {
        // Guessing is throttled as a ceremony is.
        self.ceremony_budget(source)?;
        // A name that cannot be a holder's is recorded as such, not as the text sent.
        let actor = rules::actor(&crate::valid_name(holder).unwrap_or_else(|_| "(not a name)".into()));
        let refuse = |refusal: Refusal| {
            self.emit(
                EventKind::BreakGlassRefused,
                Outcome::Failure,
                &actor,
                None,
                Some(source),
                format!("reason={}: {refusal}", refusal.code()),
            );
            IdentityError::Forbidden(refusal.to_string())
        };
        let Some(desk) = self.break_glass.get() else {
            return Err(refuse(Refusal::UnknownCode));
        };
        if normal_sign_in_works {
            // Not spent: the holder may need it when the outage comes.
            return Err(refuse(Refusal::NotNeeded));
        }
        // One lock from the check to the spending: of two requests with one code, the second
        // finds it spent.
        let digest = {
            let mut spent = desk.spent.lock().unwrap_or_else(|e| e.into_inner());
            let digest = desk.rules.check(&desk.node, holder, code, &spent).map_err(refuse)?;
            spent.insert(digest.clone());
            if let Err(e) = desk.spend(&digest) {
                // Kept in memory as spent all the same: it may have reached the disk.
                tracing::error!(error = %e, path = %desk.spent_path.display(), "cannot record a break-glass code as spent");
                return Err(refuse(Refusal::CannotSpend));
            }
            digest
        };
        let now = self.now_s();
        let sid = crate::random_token();
        let holder = holder.trim().to_owned();
        desk.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid.clone(), Live { holder: holder.clone(), began_s: now });
        let user = user_of(&holder, now);
        self.emit(
            EventKind::BreakGlassLogin,
            Outcome::Success,
            &user.name,
            None,
            Some(source),
            format!(
                "code sha256 {digest} spent on node {}; {why_needed}; for at most {} s: view and chat with a user's consent, nothing else",
                desk.node,
                rules::MAX_SIGN_IN_S
            ),
        );
        let token = self.issue_token_as(&self.break_glass_tokens(), &user, &sid, now, now)?;
        let claims = self
            .keyring()
            .verify(&self.break_glass_tokens(), &token, now)
            .map_err(|_| IdentityError::Unauthenticated)?;
        Ok((token.clone(), AuthUser { user, claims, renewed: None }))
    }

    /// A break-glass token, checked against this node's memory alone; `None` when `token` is not one.
    pub(crate) fn authenticate_break_glass(&self, token: &str) -> Option<Result<AuthUser, IdentityError>> {
        let desk = self.break_glass.get()?;
        let now = self.now_s();
        let settings = self.break_glass_tokens();
        let claims = self.keyring().verify(&settings, token, now).ok()?;
        let Some(live) = desk.alive(&claims.sid, now) else {
            return Some(Err(IdentityError::Unauthenticated));
        };
        let user = user_of(&live.holder, live.began_s);
        if claims.sub != user.id {
            return Some(Err(IdentityError::Unauthenticated));
        }
        let ends = live.began_s + rules::MAX_SIGN_IN_S;
        let renewed = (sightline_core::renewal::relay_renews(now, claims.iat, claims.exp) && claims.exp < ends)
            .then(|| self.issue_token_as(&settings, &user, &claims.sid, claims.auth_time, now).ok())
            .flatten();
        Some(Ok(AuthUser { user, claims, renewed }))
    }

    /// Whether the break-glass sign-in of `claims` still stands; `None` when it is not one.
    pub(crate) fn break_glass_alive(&self, claims: &Claims) -> Option<bool> {
        (claims.aud == BREAK_GLASS_AUDIENCE)
            .then(|| self.break_glass.get().is_some_and(|desk| desk.alive(&claims.sid, self.now_s()).is_some()))
    }

    /// Ends a break-glass sign-in; `false` when `auth` is not one.
    pub(crate) fn break_glass_logout(&self, auth: &AuthUser, source: Option<IpAddr>) -> bool {
        if auth.claims.aud != BREAK_GLASS_AUDIENCE {
            return false;
        }
        if let Some(desk) = self.break_glass.get() {
            desk.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&auth.claims.sid);
        }
        self.emit(EventKind::Logout, Outcome::Success, &auth.user.name, None, source, "break-glass sign-in ended");
        true
    }
}

/// Whether a signed-in caller came in through break-glass.
pub fn is_break_glass(auth: &AuthUser) -> bool {
    auth.claims.aud == BREAK_GLASS_AUDIENCE
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sightline_audit::events::MemorySink;
    use sightline_core::break_glass::{BreakGlassFile, code_for, digest};
    use sightline_store::Store;
    use sightline_store::embedded::Embedded;

    use super::*;

    fn rules_for(code: &str) -> BreakGlassRules {
        let file = serde_json::json!({ "holders": [{ "name": "jane", "codes_sha256": [digest(code)] }] });
        BreakGlassRules::from_file(serde_json::from_value::<BreakGlassFile>(file).unwrap()).unwrap()
    }

    /// A node with break-glass codes in `dir`; `run` names its store, so a second run is a
    /// node restarted on the same data directory with nothing else kept.
    async fn node(dir: &Path, code: &str, run: &str) -> (Identity, MemorySink) {
        let events = MemorySink::default();
        let store = Store::new(Arc::new(Embedded::open(&dir.join(run)).unwrap()));
        let identity = crate::for_tests(store, Arc::new(events.clone())).await;
        identity.set_break_glass(BreakGlassDesk::open("relay-a", rules_for(code), dir).unwrap());
        (identity, events)
    }

    fn kinds(events: &MemorySink) -> Vec<(EventKind, String, String)> {
        events.0.lock().unwrap().iter().map(|e| (e.kind, e.actor.clone(), e.detail.clone())).collect()
    }

    #[tokio::test]
    async fn a_code_opens_once_only_when_the_normal_sign_in_cannot_and_its_token_needs_no_store() {
        let tmp = tempfile::tempdir().unwrap();
        let code = code_for("relay-a", [3; 16]);
        let (identity, events) = node(tmp.path(), &code, "first").await;
        let source: IpAddr = "10.0.0.7".parse().unwrap();

        // While the normal sign-in works, the code is refused and not spent.
        let refused = identity.break_glass_sign_in("jane", &code, source, true, "").await.unwrap_err();
        assert!(refused.to_string().contains("normal sign-in works"), "{refused}");
        assert!(!tmp.path().join(SPENT_FILE).exists());

        let (token, auth) = identity.break_glass_sign_in("jane", &code, source, false, "store down").await.unwrap();
        assert_eq!(auth.user.name, "break-glass:jane");
        assert_eq!(auth.user.roles, BTreeSet::from([Role::Operator]));
        assert!(is_break_glass(&auth) && identity.break_glass_in_use());
        let spent = std::fs::read_to_string(tmp.path().join(SPENT_FILE)).unwrap();
        assert_eq!(spent.trim(), digest(&code));

        // The token is checked in memory, and the sign-in's socket re-check says it stands.
        let again = identity.authenticate(&token).await.unwrap();
        assert_eq!(again.claims.sid, auth.claims.sid);
        assert!(identity.session_alive(&again.claims).await.unwrap());

        // Spent: refused the second time, and after a restart of the node too.
        let second = identity.break_glass_sign_in("jane", &code, source, false, "store down").await.unwrap_err();
        assert!(second.to_string().contains("used before"), "{second}");
        let (restarted, _) = node(tmp.path(), &code, "restarted").await;
        let third = restarted.break_glass_sign_in("jane", &code, source, false, "store down").await.unwrap_err();
        assert!(third.to_string().contains("used before"), "{third}");

        // Logging out ends it at once.
        identity.logout(&auth, Some(source)).await.unwrap();
        assert!(identity.authenticate(&token).await.is_err());
        assert!(!identity.session_alive(&auth.claims).await.unwrap());
        assert!(!identity.break_glass_in_use());

        let seen = kinds(&events);
        let count = |k: EventKind| seen.iter().filter(|(kind, ..)| *kind == k).count();
        assert_eq!((count(EventKind::BreakGlassRefused), count(EventKind::BreakGlassLogin)), (2, 1));
        let login = seen.iter().find(|(k, ..)| *k == EventKind::BreakGlassLogin).unwrap();
        assert_eq!(login.1, "break-glass:jane");
        assert!(login.2.contains(&digest(&code)) && login.2.contains("store down"), "{}", login.2);
        assert!(seen.iter().any(|(k, _, d)| *k == EventKind::BreakGlassRefused && d.starts_with("reason=not_needed")));
    }

    #[tokio::test]
    async fn a_normal_token_is_not_taken_for_a_break_glass_one() {
        let tmp = tempfile::tempdir().unwrap();
        let code = code_for("relay-a", [4; 16]);
        let (identity, _) = node(tmp.path(), &code, "first").await;
        // A token of the right audience but a sign-in this node does not hold.
        let user = user_of("jane", identity.now_s());
        let now = identity.now_s();
        let forged = identity.issue_token_as(&identity.break_glass_tokens(), &user, "made-up", now, now).unwrap();
        assert!(identity.authenticate(&forged).await.is_err());
    }
}
