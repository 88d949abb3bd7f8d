//! The one thing the shared ports read of ICE: whom a STUN binding request is for.

const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Whether `message` is a STUN binding success response: what the webrtc crate sends only after
/// it checked the request's MESSAGE-INTEGRITY with the connection's password, so an address it
/// answers has proved it is that connection's peer.
pub(super) fn is_binding_success(message: &[u8]) -> bool {
    const BINDING_SUCCESS: u16 = 0x0101;
    message.len() >= 20
        && u16::from_be_bytes([message[0], message[1]]) == BINDING_SUCCESS
        && u32::from_be_bytes([message[4], message[5], message[6], message[7]]) == MAGIC_COOKIE
}

/// The recipient's username fragment out of a STUN binding request's USERNAME
/// (`<recipient ufrag>:<sender ufrag>`, RFC 8445 7.2.2).
pub(super) fn binding_request_ufrag(message: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: u16 = 0x0001;
    const USERNAME: u16 = 0x0006;
    let header = message.get(..20)?;
    if u16::from_be_bytes([header[0], header[1]]) != BINDING_REQUEST
        || u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE
    {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attributes = message.get(20..20 + body_len)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(ours, _)| ours).filter(|u| !u.is_empty());
        }
        attributes = attributes.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A binding request with `username`, as a browser sends it (PRIORITY after USERNAME).
    pub(crate) fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attributes = vec![0x00, 0x06];
        attributes.extend((username.len() as u16).to_be_bytes());
        attributes.extend(username);
        attributes.resize(4 + username.len().next_multiple_of(4), 0);
        // PRIORITY after it, as a browser sends it.
        attributes.extend([0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut message = vec![0x00, 0x01];
        message.extend((attributes.len() as u16).to_be_bytes());
        message.extend(0x2112_A442u32.to_be_bytes());
        message.extend([7; 12]);
        message.extend(attributes);
        message
    }

    /// A binding success response (no attributes needed for routing).
    pub(crate) fn binding_success() -> Vec<u8> {
        let mut message = vec![0x01, 0x01, 0x00, 0x00];
        message.extend(0x2112_A442u32.to_be_bytes());
        message.extend([9; 12]);
        message
    }

    #[test]
    fn a_binding_success_is_told_from_a_request_and_from_media() {
        assert!(is_binding_success(&binding_success()));
        assert!(!is_binding_success(&binding_request(b"a:b")));
        assert!(!is_binding_success(&[0x01, 0x01, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_binding_success(b"\x80\x60srtp"));
    }

    #[test]
    fn the_recipients_ufrag_is_read_from_a_binding_request() {
        assert_eq!(binding_request_ufrag(&binding_request(b"relayUfrag:agentUfrag")), Some("relayUfrag"));
    }

    #[test]
    fn anything_but_a_binding_request_with_a_username_is_not_routed() {
        let mut response = binding_request(b"a:b");
        // 0x0101: a binding success response.
        response[0] = 0x01;
        response[1] = 0x01;
        assert_eq!(binding_request_ufrag(&response), None);
        let mut no_cookie = binding_request(b"a:b");
        no_cookie[4] = 0;
        assert_eq!(binding_request_ufrag(&no_cookie), None);
        assert_eq!(binding_request_ufrag(&binding_request(b":b")), None);
        assert_eq!(binding_request_ufrag(&binding_request(b"nocolon")), None);
        let mut truncated = binding_request(b"a:b");
        truncated.truncate(24);
        assert_eq!(binding_request_ufrag(&truncated), None);
        assert_eq!(binding_request_ufrag(b"GET / HTTP/1.1\r\n\r\n"), None);
    }
}
