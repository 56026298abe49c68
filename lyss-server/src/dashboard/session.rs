//! Dashboard sessions without server state: a cookie holding its expiry and an HMAC of it
//! under a key derived from the admin token (so every replica accepts it, and changing the
//! admin token ends every session). Forms carry a CSRF token derived from the same session.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// The cookie's name.
pub const COOKIE: &str = "lyss_session";
/// How long a sign-in lasts.
pub const LIFETIME_SECS: i64 = 8 * 3600;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks sessions for one admin token.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(admin_token: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"lyss dashboard sessions\0");
        h.update(admin_token.as_bytes());
        Self {
            key: h.finalize().into(),
        }
    }

    fn mac(&self, what: &str) -> String {
        // An HMAC key of any length is valid: `new_from_slice` cannot fail here.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(what.as_bytes());
        hex(&m.finalize().into_bytes())
    }

    /// A new session valid until `now + LIFETIME_SECS`: the cookie value.
    pub fn issue(&self, now: i64) -> String {
        let expires = now + LIFETIME_SECS;
        format!("{expires}.{}", self.mac(&format!("session|{expires}")))
    }

    /// Whether a cookie value is a live session.
    pub fn check(&self, cookie: &str, now: i64) -> bool {
        let Some((expires, mac)) = cookie.split_once('.') else {
            return false;
        };
        let Ok(at) = expires.parse::<i64>() else {
            return false;
        };
        let expected = self.mac(&format!("session|{at}"));
        bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) && now < at
    }

    /// The CSRF token of a session (a form field every POST must carry).
    pub fn csrf(&self, cookie: &str) -> String {
        self.mac(&format!("csrf|{cookie}"))
    }

    /// Whether a form's CSRF token belongs to this session.
    pub fn check_csrf(&self, cookie: &str, token: &str) -> bool {
        self.csrf(cookie).as_bytes().ct_eq(token.as_bytes()).into()
    }
}

/// The session cookie of a request, if any.
pub fn cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_belong_to_their_admin_token() {
        let s = Sessions::new("token-a");
        let c = s.issue(1_000);
        assert!(s.check(&c, 1_001));
        assert!(!s.check(&c, 1_000 + LIFETIME_SECS), "expired");
        assert!(
            !Sessions::new("token-b").check(&c, 1_001),
            "another admin token"
        );
        let forged = format!(
            "{}.{}",
            1_000 + 10 * LIFETIME_SECS,
            c.split_once('.').unwrap().1
        );
        assert!(
            !s.check(&forged, 1_001),
            "a moved expiry breaks the signature"
        );
        assert!(!s.check("garbage", 1_001));
        let csrf = s.csrf(&c);
        assert!(s.check_csrf(&c, &csrf));
        assert!(
            !s.check_csrf(&s.issue(2_000), &csrf),
            "bound to its session"
        );
        assert!(!s.check_csrf(&c, ""));
    }
}
