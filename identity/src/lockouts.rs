//! Lockouts an admin (or the CLI) lifts.

use super::*;

impl Identity {
    pub async fn locked_subjects(&self) -> Result<Vec<(String, Attempts)>, IdentityError> {
        Ok(self.store.list::<Attempts>(Collection::Lockouts).await?.into_iter().filter(|(_, a)| a.locked).collect())
    }

    pub async fn unlock(&self, admin: &AuthUser, key: &str, source: Option<IpAddr>) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        self.unlock_as(&admin.user.name, key, source).await
    }

    /// Break-glass unlock from the relay's command line (`relay unlock`), for operators of the
    /// system when every admin is locked out. Audited like any unlock, with `actor` naming who ran
    /// the command (`sightline_audit::cli_actor`).
    pub async fn unlock_from_cli(
        &self,
        actor: &str,
        account: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let key = match (account, address) {
            (Some(name), None) => {
                lockout_key_account(&self.user_by_name(name).await?.ok_or(IdentityError::NotFound)?.id)
            }
            (None, Some(ip)) => lockout_key_addr(ip),
            _ => return Err(IdentityError::BadRequest("give exactly one of --account or --address".into())),
        };
        self.unlock_as(actor, &key, None).await
    }

    pub(super) async fn unlock_as(&self, actor: &str, key: &str, source: Option<IpAddr>) -> Result<(), IdentityError> {
        if !(key.starts_with("account:") || key.starts_with("addr:")) {
            return Err(IdentityError::BadRequest("unknown lock".into()));
        }
        self.audit_available()?;
        if !self.store.delete(Collection::Lockouts, key).await? {
            return Err(IdentityError::NotFound);
        }
        self.emit(EventKind::Unlocked, Outcome::Success, actor, Some(key), source, "");
        self.audit_committed().await?;
        Ok(())
    }
}
