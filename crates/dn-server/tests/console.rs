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
    assert!(html.contains(r#"<script src="/console/compare.js" defer></script>"#));
    assert!(html.contains(r#"<script src="/console/app.js" defer></script>"#));
    // No inline script or style: the policy would block them.
    assert_eq!(html.matches("<script").count(), 2, "{html}");
    assert_eq!(html.matches("<script src=").count(), 2, "{html}");
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "{html}"
    );

    for file in ["app.js", "compare.js"] {
        let script = http
            .get(format!("{}/console/{file}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(script.status(), 200, "{file}");
        assert!(
            script.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        let js = script.text().await.unwrap();
        // Values reach the page as text: the scripts never assign markup.
        assert!(
            !js.contains("innerHTML")
                && !js.contains("outerHTML")
                && !js.contains("insertAdjacentHTML"),
            "{file}"
        );
        assert!(
            !js.contains("document.cookie") && !js.contains("localStorage"),
            "{file}"
        );
    }
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
    common::push_fixtures(&server.client(&server.key_a), "acme").await;
    assert_eq!(server.create_docs_job().await.0, 200);
    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/org/acme/workspaces",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["items"]),
        (200, &serde_json::json!(["main"]))
    );
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v1/org/acme/workspaces",
            Some(&server.key_b),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "another organization's workspaces are not found"
    );
}

/// The dataset viewer's route checks what it is asked before anything renders: the organization, the
/// dataset, a catalog model, the limits; a server without a previewer says so.
#[tokio::test]
async fn the_preview_route_checks_its_request_and_needs_a_previewer() {
    let server = common::start().await;
    let client = server.client(&server.key_a);
    client
        .push_dataset(
            "acme",
            common::dataset_files("demos", "0.1.0", common::ROWS),
        )
        .await
        .unwrap();
    let path = "/api/v1/org/acme/datasets/demos/0.1.0/preview";
    let ask = |body: serde_json::Value, key: &str| {
        let key = key.to_owned();
        let server = &server;
        async move {
            server
                .call(Method::POST, path, Some(&key), Some(body))
                .await
        }
    };
    let model = server.model.clone();
    let (status, body) = ask(
        serde_json::json!({"model": model, "limit": 0}),
        &server.key_a,
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    let (status, body) = ask(serde_json::json!({"model": "/etc"}), &server.key_a).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("catalog"),
        "{body}"
    );
    let (status, body) = ask(
        serde_json::json!({"model": model, "colour": 1}),
        &server.key_a,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = ask(serde_json::json!({"model": model}), &server.key_b).await;
    assert_eq!(status, 404, "another organization's dataset is not found");
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/org/acme/datasets/missing/0.1.0/preview",
            Some(&server.key_a),
            Some(serde_json::json!({"model": model})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = ask(serde_json::json!({"model": model}), &server.key_a).await;
    assert_eq!(status, 503, "{body}");
}
