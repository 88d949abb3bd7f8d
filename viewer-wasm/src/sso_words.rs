//! What the sign-in page says after a directory sign-in the relay refused (R12): the relay sends
//! the browser to `#/sso/refused/<reason>`, with `reason` one of `sightline_sso::Refusal::code`'s
//! names. IO-free, tested on the host.

/// The page's route for a directory sign-in: continuing with the passkey, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoRoute {
    Continue,
    Refused(String),
}

/// Reads the route from the location's hash (`#/sso`, `#/sso/refused/<reason>`).
pub fn route(hash: &str) -> Option<SsoRoute> {
    let rest = hash.strip_prefix("#/sso")?;
    match rest {
        "" | "/" => Some(SsoRoute::Continue),
        _ => rest.strip_prefix("/refused/").map(|r| SsoRoute::Refused(r.to_owned())),
    }
}

/// What a person is told for a refusal, by reason.
pub fn refusal(reason: &str) -> String {
    let why = match reason {
        "no_mapped_group" => "none of your directory groups gives a role in Sightline. Ask for the group that does.",
        "bad_state" | "browser_mismatch" => {
            "the sign-in did not start in this browser or was already used. Start it again from this page."
        }
        "stale_sign_in" => "your sign-in at the identity provider is too old. Sign in there again.",
        "provider_error" => "the identity provider refused the sign-in.",
        "provider_unavailable" => "the identity provider could not be reached. Try again shortly.",
        "expired"
        | "wrong_audience"
        | "wrong_issuer"
        | "nonce_replay"
        | "unsigned"
        | "unknown_key"
        | "bad_signature"
        | "algorithm_not_allowed"
        | "malformed" => {
            "the identity provider's answer did not pass the relay's checks, and the attempt was recorded. Tell your administrator."
        }
        _ => "the relay refused it.",
    };
    format!("Sign-in through your organisation failed: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_hash() {
        assert_eq!(route("#/sso"), Some(SsoRoute::Continue));
        assert_eq!(route("#/sso/refused/nonce_replay"), Some(SsoRoute::Refused("nonce_replay".into())));
        assert_eq!(route("#/enrol/abc"), None);
        assert_eq!(route("#/ssox"), None);
        assert_eq!(route(""), None);
    }

    #[test]
    fn every_refusal_says_what_to_do_and_unknown_ones_still_say_something() {
        assert!(refusal("no_mapped_group").contains("groups"));
        assert!(refusal("nonce_replay").contains("recorded"));
        assert!(refusal("whatever").starts_with("Sign-in through your organisation failed"));
    }
}
