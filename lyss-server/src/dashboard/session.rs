//! Dashboard sessions: a cookie holding the session's expiry, its random id and an HMAC of both
//! under a key derived from the admin token (changing the admin token ends every session), and
//! a row in the store per open session (by the id's hash), which signing out deletes — a cookie
//! captured before stops working on every replica at once. Forms carry a CSRF token derived
//! from the same session.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    /// What [`Sessions::seal`] encrypts with (another key derived from the admin token),
    /// expanded once.
    sealer: std::sync::Arc<lyss_core::secrets::MasterKey>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(admin_token: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"lyss dashboard sessions\0");
        h.update(admin_token.as_bytes());
        let mut s = Sha256::new();
        s.update(b"lyss sealed values\0");
        s.update(admin_token.as_bytes());
        Self {
            key: h.finalize().into(),
            sealer: std::sync::Arc::new(lyss_core::secrets::MasterKey::from_bytes(
                &s.finalize().into(),
            )),
        }
    }

    fn mac(&self, what: &str) -> String {
        // An HMAC key of any length is valid: `new_from_slice` cannot fail here.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(what.as_bytes());
        hex(&m.finalize().into_bytes())
    }

    /// A new session valid until `now + LIFETIME_SECS`: its id (for the store) and the
    /// cookie value.
    pub fn issue(&self, now: i64) -> (String, String) {
        let expires = now + LIFETIME_SECS;
        let id = lyss_core::policy::keys::random_token(32);
        let mac = self.mac(&format!("session|{expires}|{id}"));
        (id.clone(), format!("{expires}.{id}.{mac}"))
    }

    /// The session id of a cookie value that this admin token signed and that has not
    /// expired; whether the session is still open is the store's to say.
    pub fn check(&self, cookie: &str, now: i64) -> Option<String> {
        let mut parts = cookie.splitn(3, '.');
        let (expires, id, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let at = expires.parse::<i64>().ok()?;
        let expected = self.mac(&format!("session|{at}|{id}"));
        (bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) && now < at).then(|| id.to_owned())
    }

    /// `payload` for `purpose`, encrypted and authenticated (AES-256-GCM, the purpose bound
    /// in), as URL-safe base64 so it travels in a URL or a cookie: a link that is logged or
    /// forwarded shows nothing of what it carries (ids, an end-user's name), and no byte of it
    /// can be changed.
    pub fn seal(&self, purpose: &str, payload: &str) -> String {
        // AES-GCM refuses only messages of tens of GiB; an empty value would never unseal.
        URL_SAFE_NO_PAD.encode(self.sealer.seal(purpose, payload).unwrap_or_default())
    }

    /// The payload of a value [`Sessions::seal`] made for `purpose` with this admin token.
    pub fn unseal(&self, purpose: &str, sealed: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        self.sealer.open(purpose, &bytes).ok()
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

/// Whether the browser says a request comes from another site's page (`Sec-Fetch-Site`, which
/// a page cannot set): a sign-in form posted from elsewhere would sign the browser in as
/// whoever made the form (login CSRF). Clients that are not browsers send no such header.
pub fn from_another_site(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// The value of a request's cookie `name` (the dashboard's [`COOKIE`], `/me`'s), if any.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_belong_to_their_admin_token() {
        let s = Sessions::new("token-a");
        let (id, c) = s.issue(1_000);
        assert_eq!(s.check(&c, 1_001), Some(id.clone()));
        assert_eq!(s.check(&c, 1_000 + LIFETIME_SECS), None, "expired");
        assert_eq!(
            Sessions::new("token-b").check(&c, 1_001),
            None,
            "another admin token"
        );
        let (_, rest) = c.split_once('.').unwrap();
        let forged = format!("{}.{rest}", 1_000 + 10 * LIFETIME_SECS);
        assert_eq!(
            s.check(&forged, 1_001),
            None,
            "a moved expiry breaks the signature"
        );
        let (other, _) = s.issue(1_000);
        assert_ne!(other, id, "every sign-in is a session of its own");
        assert_eq!(s.check("garbage", 1_001), None);
        let csrf = s.csrf(&c);
        assert!(s.check_csrf(&c, &csrf));
        assert!(
            !s.check_csrf(&s.issue(2_000).1, &csrf),
            "bound to its session"
        );
        assert!(!s.check_csrf(&c, ""));
        let sealed = s.seal("link", "{\"e\":\"ann's phone\"}");
        assert_eq!(
            s.unseal("link", &sealed).as_deref(),
            Some("{\"e\":\"ann's phone\"}")
        );
        assert_eq!(
            s.unseal("session", &sealed),
            None,
            "sealed for another purpose"
        );
        assert_eq!(Sessions::new("token-b").unseal("link", &sealed), None);
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"ann's phone"),
            "nothing of it is readable"
        );
        assert_ne!(
            s.seal("link", "{\"e\":\"ann's phone\"}"),
            sealed,
            "a nonce each"
        );
        let flipped = |at: usize| {
            let mut b = sealed.clone().into_bytes();
            b[at] = if b[at] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        };
        for at in [0, sealed.len() / 2, sealed.len() - 1] {
            assert_eq!(
                s.unseal("link", &flipped(at)),
                None,
                "a byte changed at {at}"
            );
        }
        assert_eq!(s.unseal("link", &sealed[..sealed.len() - 2]), None);
        assert_eq!(s.unseal("link", "zz"), None);
    }
}
