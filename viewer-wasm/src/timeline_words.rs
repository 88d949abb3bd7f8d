//! What the auditor's timeline says for each entry of a recording (IO-free, so it is tested on
//! the host).

/// What one timeline entry says, in a line.
pub fn describe(entry: &serde_json::Value) -> (String, String) {
    let s = |k: &str| entry[k].as_str().unwrap_or_default().to_owned();
    match entry["type"].as_str().unwrap_or_default() {
        "event" => {
            (s("kind"), format!("{}: {}", s("actor"), readable(&s("detail")).chars().take(160).collect::<String>()))
        }
        "chat" => ("chat".into(), format!("{}: {}", s("from"), s("text"))),
        "input" => ("input".into(), entry["counts"].to_string()),
        "recorder" => ("recorder".into(), format!("{}: {}", s("state"), s("detail"))),
        "gap" => ("gap".into(), format!("frames not recorded: {}", s("reason"))),
        other => (other.to_owned(), String::new()),
    }
}

/// An event's detail for a person: a signed document at its end (a consent receipt) is left to
/// the record, where the verification reads it; the words before it stay.
fn readable(detail: &str) -> String {
    match detail.find('{') {
        Some(at) if serde_json::from_str::<serde_json::Value>(&detail[at..]).is_ok() => {
            format!("{} (in the record)", detail[..at].trim_end().trim_end_matches(':'))
        }
        _ => detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn a_signed_document_is_left_to_the_record_and_other_details_kept() {
        assert_eq!(
            readable(r#"levels: view, chat; receipt signed at 17 by the device key: {"kind":"session","n":1}"#),
            "levels: view, chat; receipt signed at 17 by the device key (in the record)"
        );
        assert_eq!(readable("levels: view {not json"), "levels: view {not json");
        assert_eq!(readable("the operator ended the session"), "the operator ended the session");
    }
}
