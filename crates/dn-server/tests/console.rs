//! The web console's files: served at `/` and `/console/`, under a Content-Security-Policy that allows only
//! same-origin scripts and styles (no inline script), with no cookie; `/whoami` names the key's organization.

mod common;

use reqwest::Method;

#[tokio::test]
async fn the_console_is_served_under_a_strict_policy_and_signs_in_by_header() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(headers.get("set-cookie").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/console/app.js" defer></script>"#));
    // No inline script or style: the policy would block them.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "{html}"
    );

    let script = http
        .get(format!("{}/console/app.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let js = script.text().await.unwrap();
    // Values reach the page as text: the script never assigns markup.
    assert!(
        !js.contains("innerHTML")
            && !js.contains("outerHTML")
            && !js.contains("insertAdjacentHTML")
    );
    assert!(!js.contains("document.cookie") && !js.contains("localStorage"));
    let missing = http
        .get(format!("{}/console/other.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let (status, body) = server
        .call(Method::GET, "/api/v1/whoami", Some(&server.key_a), None)
        .await;
    assert_eq!((status, body["organization"].as_str()), (200, Some("acme")));
    let (status, _) = server
        .call(Method::GET, "/whoami", Some("nope"), None)
        .await;
    assert_eq!(status, 401);
}
