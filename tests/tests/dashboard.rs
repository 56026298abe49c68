//! `/dashboard` in headless Chromium (Debian's `chromium`, driven by `playwright-core`): sign in
//! with the admin token, see the charts, create a key and revoke another — and the CSRF and
//! session checks, without a browser. And `/me`, the key holder's own page. Needs LYSS_TEST_CHROMIUM and the node modules of
//! tests/dashboard (scripts/test.sh provides both; required when CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lyss_tests::Deployment;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const ADMIN: &str = "dashboard-test-admin-token";

fn browser() -> Option<(String, std::path::PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    let chromium = std::env::var("LYSS_TEST_CHROMIUM").ok();
    let modules = dir.join("node_modules/playwright-core").exists();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            chromium.is_some() && modules,
            "CI=true needs LYSS_TEST_CHROMIUM and tests/dashboard/node_modules (scripts/test.sh)"
        );
    }
    match (chromium, modules) {
        (Some(c), true) => Some((c, dir)),
        _ => {
            eprintln!("skipped: no chromium or playwright-core");
            None
        }
    }
}

/// lyss with the dashboard's admin token and `extra` configuration, in front of an upstream that
/// answers every chat with 1,200 prompt and 300 completion tokens.
async fn deployment(extra: &str) -> (MockServer, Deployment) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}})))
        .mount(&upstream)
        .await;
    let d = Deployment::new(
        &format!("{}/v1", upstream.uri()),
        &format!("admin_token = \"{ADMIN}\"\n{extra}"),
    );
    (upstream, d)
}

/// A page link `key` mints for `person`, opened: the link session's cookie (`lyss_me=link.…`).
async fn open_link(client: &reqwest::Client, base: &str, key: &str, person: &str) -> String {
    let minted: Value = client
        .post(format!("{base}/v1/memories/page"))
        .bearer_auth(key)
        .json(&json!({"user": person}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["url"]
        .as_str()
        .unwrap()
        .split_once("token=")
        .unwrap()
        .1;
    let opened = client
        .post(format!("{base}/me/open"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200, "{minted}");
    let cookie = opened.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn an_admin_signs_in_sees_charts_creates_and_revokes_keys() {
    let (_upstream, d) = deployment("[cache]\nmode = \"exact\"").await;
    let lyss = |a: &[&str]| d.lyss(a);
    let server = d.serve().await;
    lyss(&["workspace", "create", "team", "--models", "gpt-4o-mini"]);
    lyss(&["user", "create", "ann", "--workspace", "team"]);
    let old = lyss(&["key", "create", "--user", "ann", "--name", "old"]);
    let old_key = old["key"].as_str().unwrap().to_owned();
    let old_id = old["id"].as_str().unwrap().to_owned();
    lyss(&[
        "budget",
        "set",
        "--workspace",
        "team",
        "--usd",
        "5",
        "--period",
        "monthly",
    ]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let chat = |key: String| {
        let client = client.clone();
        let base = server.base.clone();
        async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Spend and a cache hit, so that the charts have bars.
    for _ in 0..3 {
        assert_eq!(chat(old_key.clone()).await, 200);
    }
    // Memories of ann's, in her own scope and an end-user's.
    let mut ids = Vec::new();
    for body in [
        json!({"text": "My bike is a blue Gazelle."}),
        json!({"text": "My phone is a Fairphone.", "user": "lobe-7f3a"}),
    ] {
        let added = client
            .post(format!("{}/v1/memories", server.base))
            .bearer_auth(&old_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 201);
        ids.push(
            added.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // Without a browser: no session → the sign-in page; a session but no CSRF token → 403.
    let page = client
        .get(format!("{}/dashboard/keys", server.base))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("Admin token"));
    let login = client
        .post(format!("{}/dashboard/login", server.base))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let session = set_cookie.split(';').next().unwrap().to_owned();
    let forged = client
        .post(format!("{}/dashboard/keys", server.base))
        .header("cookie", &session)
        .form(&[("user", "ann"), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let keys: Value = serde_json::to_value(lyss(&["key", "list"])).unwrap();
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "the forged form created nothing"
    );
    let forged = client
        .post(format!(
            "{}/dashboard/memories/{}/delete",
            server.base, ids[0]
        ))
        .header("cookie", &session)
        .form(&[("user", "ann"), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let kept = client
        .get(format!("{}/v1/memories/{}", server.base, ids[0]))
        .bearer_auth(&old_key)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200, "the forged form deleted nothing");

    let Some((chromium, script_dir)) = browser() else {
        return;
    };
    let shot = d.dir.path().join("dashboard.png");
    let out = Command::new("node")
        .arg(script_dir.join("dashboard.mjs"))
        .current_dir(&script_dir)
        .env("BASE", &server.base)
        .env("TOKEN", ADMIN)
        .env("CHROMIUM", &chromium)
        .env("SHOT", &shot)
        .env("REVOKE", &old_id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot was taken"
    );
    if let Ok(keep) = std::env::var("LYSS_DASHBOARD_SHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    // The key made in the browser works; the one revoked there stops within a second.
    assert_eq!(
        chat(result["created"].as_str().unwrap().to_owned()).await,
        200
    );
    let revoked_at = Instant::now();
    while chat(old_key.clone()).await != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "revocation did not take"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/me`: a key holder signs in with nothing but their key, sees their profile, memories,
/// usage and budgets, corrects and deletes memories, opens an end-user's scope and forgets
/// everything (tests/dashboard/me.mjs); another key sees none of it; a form without the CSRF
/// token changes nothing.
#[tokio::test]
async fn a_key_holder_sees_and_steers_their_memory_on_their_page() {
    let (_upstream, d) = deployment("").await;
    let lyss = |a: &[&str]| d.lyss(a);
    let server = d.serve().await;
    lyss(&["workspace", "create", "team", "--models", "gpt-4o-mini"]);
    lyss(&["user", "create", "ann", "--workspace", "team"]);
    lyss(&["user", "create", "bob", "--workspace", "team"]);
    let ann = lyss(&["key", "create", "--user", "ann", "--name", "laptop"]);
    let key = ann["key"].as_str().unwrap().to_owned();
    let bob = lyss(&["key", "create", "--user", "bob"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    lyss(&[
        "budget", "set", "--user", "ann", "--usd", "20", "--period", "monthly",
    ]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let remember = async |body: Value| -> String {
        let resp = client
            .post(format!("{}/v1/memories", server.base))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    remember(json!({"text": "I am vegetarian.", "profile": true})).await;
    let bike = remember(json!({"text": "My bike is a blue Gazelle with a wicker basket."})).await;
    let cat = remember(json!({"text": "My cat Miso sleeps on the piano."})).await;
    remember(json!({"text": "My phone is a Fairphone.", "user": "lobe-7f3a"})).await;
    let chat = client
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&key)
        .header("x-lyss-memory", "off")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);

    // Without a browser: no cookie → the sign-in page; a bad key → 401; the cookie's flags; a
    // form without the CSRF token deletes nothing.
    let page = client
        .get(format!("{}/me", server.base))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("Your lyss key"));
    let bad = client
        .post(format!("{}/me/login", server.base))
        .form(&[("key", "lyss-sk-nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    // A sign-in form posted from another site's page signs nobody in (login CSRF).
    let elsewhere = client
        .post(format!("{}/me/login", server.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere.headers().get("set-cookie").is_none());
    let login = client
        .post(format!("{}/me/login", server.base))
        .form(&[("key", key.as_str())])
        .send()
        .await
        .unwrap();
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/me"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let session = set_cookie.split(';').next().unwrap().to_owned();
    // The cookie is a session with the key sealed in it, not the key: the key itself as the
    // cookie opens nothing.
    assert!(
        !set_cookie.contains(&key) && !set_cookie.contains("lyss-sk-"),
        "{set_cookie}"
    );
    let as_cookie = client
        .get(format!("{}/me", server.base))
        .header("cookie", format!("lyss_me={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_cookie.status(), 401);
    let forged = client
        .post(format!("{}/me/memories/{bike}/delete", server.base))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let kept = client
        .get(format!("{}/v1/memories/{bike}", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200, "the forged form deleted nothing");
    // Signing out ends the session in the store: a copy of the cookie opens nothing.
    let signed_in = client
        .get(format!("{}/me", server.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(signed_in.contains("Signed in as"), "{signed_in}");
    let csrf = signed_in
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let out = client
        .post(format!("{}/me/logout", server.base))
        .header("cookie", &session)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let copy = client
        .get(format!("{}/me", server.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(copy.status(), 401, "a signed-out cookie's copy");

    // An app sharing one key among its people: a link it mints for one of them opens the page
    // on that person's scope only, and stops working with the key.
    let app = lyss(&["key", "create", "--user", "ann", "--name", "app"]);
    let (app, app_id) = (
        app["key"].as_str().unwrap().to_owned(),
        app["id"].as_str().unwrap().to_owned(),
    );
    for body in [
        json!({"text": "I am allergic to peanuts.", "profile": true, "user": "app-person-9"}),
        json!({"text": "My dog is called Rex.", "user": "app-person-9"}),
    ] {
        let added = client
            .post(format!("{}/v1/memories", server.base))
            .bearer_auth(&app)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 201);
    }
    let minted: Value = client
        .post(format!("{}/v1/memories/page", server.base))
        .bearer_auth(&app)
        .json(&json!({"user": "app-person-9"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = minted["url"].as_str().unwrap();
    assert!(url.starts_with("/me/open?token="), "{minted}");
    let tampered = format!(
        "{}{}",
        &url[..url.len() - 1],
        if url.ends_with('0') { '1' } else { '0' }
    );
    let refused = client
        .get(format!("{}{tampered}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a tampered link opens nothing");
    // The link's token is not a session: sent as the cookie, it opens nothing.
    let token = url.split_once("token=").unwrap().1;
    let as_cookie = client
        .get(format!("{}/me", server.base))
        .header("cookie", format!("lyss_me=link.{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_cookie.status(), 401);
    // Followed, the link only asks: a preview or a mail scanner fetching it uses nothing up.
    for _ in 0..2 {
        let asked = client
            .get(format!("{}{url}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(asked.status(), 200);
        assert!(asked.headers().get("set-cookie").is_none());
        let page = asked.text().await.unwrap();
        assert!(
            page.contains(r#"action="/me/open""#) && page.contains(token),
            "{page}"
        );
    }
    // Its button opens it: a page of lyss's own that moves on to /me (a redirect would lose
    // the SameSite=Strict cookie on the way), and once only.
    let open = || {
        client
            .post(format!("{}/me/open", server.base))
            .form(&[("token", token)])
            .send()
    };
    let elsewhere = client
        .post(format!("{}/me/open", server.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403, "another site's form opens nothing");
    assert!(elsewhere.headers().get("set-cookie").is_none());
    let opened = open().await.unwrap();
    assert_eq!(opened.status(), 200, "and used nothing up");
    let link_cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(opened.text().await.unwrap().contains("url=/me"));
    for flag in [
        "lyss_me=link.",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/me",
    ] {
        assert!(link_cookie.contains(flag), "{link_cookie}");
    }
    assert_eq!(open().await.unwrap().status(), 401, "a link opens once");
    let again = client
        .get(format!("{}{url}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "a used link says so when followed");
    let link_cookie = link_cookie.split(';').next().unwrap().to_owned();
    let as_person = async |path: &str| -> String {
        let resp = client
            .get(format!("{}{path}", server.base))
            .header("cookie", &link_cookie)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let page = resp.text().await.unwrap();
        assert!(
            status == 200 || page.contains("That link has expired"),
            "{path}: {status}"
        );
        page
    };
    let seen = as_person("/me").await;
    assert!(seen.contains("My dog is called Rex.") && seen.contains("allergic to peanuts"));
    assert!(seen.contains("app-person-9"));
    for hidden in [
        "Gazelle",
        "Fairphone",
        "vegetarian",
        "This key",
        "Budgets",
        "lobe-7f3a",
    ] {
        assert!(!seen.contains(hidden), "a link's page shows {hidden}");
    }
    let other_scope = as_person("/me?end_user=lobe-7f3a").await;
    assert!(other_scope.contains("My dog is called Rex.") && !other_scope.contains("Fairphone"));
    let csrf = seen
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let forgot = client
        .post(format!("{}/me/forget", server.base))
        .header("cookie", &link_cookie)
        .form(&[("csrf", csrf.as_str()), ("confirm", "FORGET")])
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 303);
    let left = |user: &'static str| {
        let client = client.clone();
        let (base, key) = (server.base.clone(), key.clone());
        async move {
            let v: Value = client
                .get(format!("{base}/v1/memories?user={user}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"].as_array().unwrap().len()
        }
    };
    assert_eq!(
        left("app-person-9").await,
        0,
        "the link's forget emptied its scope"
    );
    assert_eq!(left("lobe-7f3a").await, 1, "and only its scope");
    assert_eq!(left("").await, 3, "nor the key's own");
    // Signing out ends the session in the store: a copy of the cookie stops working.
    let out = client
        .post(format!("{}/me/logout", server.base))
        .header("cookie", &link_cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(as_person("/me").await.contains("That link has expired"));
    // A revoked key ends the pages of its links.
    let second = open_link(&client, &server.base, &app, "app-person-9").await;
    let page = async |cookie: &str| {
        client
            .get(format!("{}/me", server.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(page(&second).await, 200);
    lyss(&["key", "revoke", &app_id]);
    assert_eq!(
        page(&second).await,
        401,
        "a revoked key ends its links' pages"
    );

    let Some((chromium, script_dir)) = browser() else {
        return;
    };
    let shot = d.dir.path().join("me.png");
    let minted: Value = client
        .post(format!("{}/v1/memories/page", server.base))
        .bearer_auth(&key)
        .json(&json!({"user": "lobe-7f3a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = Command::new("node")
        .arg(script_dir.join("me.mjs"))
        .current_dir(&script_dir)
        .env("BASE", &server.base)
        .env("KEY", &key)
        .env("OTHER_KEY", &bob)
        .env("CHROMIUM", &chromium)
        .env("SHOT", &shot)
        .env("BIKE", &bike)
        .env("CAT", &cat)
        .env("LINK", minted["url"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    if let Ok(keep) = std::env::var("LYSS_ME_SHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    // Forgotten through the page: nothing left in any of ann's scopes.
    for scope in ["", "?user=lobe-7f3a"] {
        let left: Value = client
            .get(format!("{}/v1/memories{scope}", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(left["data"], json!([]), "{scope}: {left}");
    }
}

/// A link's session acts for the app's key without holding it, so it has no rate limits of its
/// own: it is held to 60 requests a minute (`LINK_REQUESTS_PER_MINUTE`), before the store is
/// asked anything — per session, so another person's page and a key holder's are not slowed.
#[tokio::test]
async fn a_link_session_is_held_to_a_request_rate_of_its_own() {
    let (_upstream, d) = deployment("").await;
    let lyss = |a: &[&str]| d.lyss(a);
    let server = d.serve().await;
    lyss(&["workspace", "create", "team", "--models", "gpt-4o-mini"]);
    lyss(&["user", "create", "ann", "--workspace", "team"]);
    let app = lyss(&["key", "create", "--user", "ann", "--name", "app"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = async |cookie: &str| {
        client
            .get(format!("{}/me", server.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    };
    let first = open_link(&client, &server.base, &app, "app-person-1").await;
    for i in 0..60 {
        assert_eq!(page(&first).await.status(), 200, "request {i}");
    }
    let refused = page(&first).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    assert!(refused.text().await.unwrap().contains("this page"));
    let second = open_link(&client, &server.base, &app, "app-person-2").await;
    assert_eq!(page(&second).await.status(), 200, "another person's page");
    let login = client
        .post(format!("{}/me/login", server.base))
        .form(&[("key", app.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let holder = page(cookie.split(';').next().unwrap()).await;
    assert_eq!(holder.status(), 200, "a key holder's page");
    assert!(holder.text().await.unwrap().contains("What lyss remembers"));
}
