//! Two organizations: a key of `rival` gets the same 404 for every route of `acme`, whether the resource
//! exists or not, and `acme`'s job ids are invisible under `rival`'s own paths.

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn every_route_hides_other_organizations() {
    let server = start().await;
    let acme = server.client(&server.key_a);
    push_fixtures(&acme, "acme").await;
    let (status, job) = server
        .call(
            Method::POST,
            "/api/v1/org/acme/ws/main/training/jobs",
            Some(&server.key_a),
            Some(docs_request(&server.model)),
        )
        .await;
    assert_eq!(status, 200);
    let id = job["id"].as_str().unwrap().to_owned();

    let probes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/org/acme/ws/main/training/jobs".into(),
            Some(docs_request(&server.model)),
        ),
        (Method::GET, "/org/acme/ws/main/training/jobs".into(), None),
        (
            Method::GET,
            format!("/org/acme/ws/main/training/jobs/{id}"),
            None,
        ),
        (
            Method::POST,
            format!("/org/acme/ws/main/training/jobs/{id}/cancel"),
            None,
        ),
        (
            Method::POST,
            format!("/org/acme/ws/main/training/jobs/{id}/retry"),
            None,
        ),
        (
            Method::GET,
            format!("/org/acme/ws/main/training/jobs/{id}/logs"),
            None,
        ),
        (
            Method::GET,
            format!("/org/acme/ws/main/training/jobs/{id}/artifacts"),
            None,
        ),
        (Method::GET, "/org/acme/datasets".into(), None),
        (
            Method::GET,
            "/org/acme/datasets/support-demos/0.1.0".into(),
            None,
        ),
        (
            Method::GET,
            "/org/acme/datasets/support-demos/0.1.0/files/train.jsonl".into(),
            None,
        ),
        (Method::GET, "/org/acme/capabilities".into(), None),
        (
            Method::GET,
            "/org/acme/capabilities/support-agent/1.0.0".into(),
            None,
        ),
        (
            Method::GET,
            "/org/acme/capabilities/support-agent/1.0.0/files/capability.yaml".into(),
            None,
        ),
    ];
    for (method, path, body) in &probes {
        for prefix in ["/api/v1", ""] {
            let full = format!("{prefix}{path}");
            // The owner can use the route...
            let (owner_status, _) = server
                .call(method.clone(), &full, Some(&server.key_a), body.clone())
                .await;
            assert!(
                owner_status < 400 || owner_status == 409,
                "{method} {full} as owner: {owner_status}"
            );
            // ...the other organization gets a 404 that says nothing about existence.
            let (status, answer) = server
                .call(method.clone(), &full, Some(&server.key_b), body.clone())
                .await;
            assert_eq!(status, 404, "{method} {full} as rival: {answer}");
            let unknown = full.replace("/org/acme/", "/org/no-such-org/");
            let (unknown_status, unknown_answer) = server
                .call(method.clone(), &unknown, Some(&server.key_b), body.clone())
                .await;
            assert_eq!(unknown_status, 404);
            assert_eq!(
                answer["detail"].as_str().unwrap().replace("acme", "X"),
                unknown_answer["detail"]
                    .as_str()
                    .unwrap()
                    .replace("no-such-org", "X"),
                "an existing org must read like a missing one"
            );
        }
    }

    // Pushing into another org is refused the same way.
    let rival = server.client(&server.key_b);
    let err = rival
        .push_dataset("acme", dataset_files("x", "1.0.0", ROWS))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));

    // acme's job id under rival's own scope: not found, on every job route.
    for suffix in [
        "",
        "/cancel",
        "/retry",
        "/logs",
        "/logs/stream",
        "/artifacts",
        "/checkpoints/final",
        "/checkpoints/final/files/adapter_config.json",
    ] {
        let method = if suffix == "/cancel" || suffix == "/retry" {
            Method::POST
        } else {
            Method::GET
        };
        let path = format!("/api/v1/org/rival/ws/main/training/jobs/{id}{suffix}");
        let (status, _) = server.call(method, &path, Some(&server.key_b), None).await;
        assert_eq!(status, 404, "{path}");
    }
    // The owner gets a checkpoint the job does not have as not found, named.
    let path = format!("/api/v1/org/acme/ws/main/training/jobs/{id}/checkpoints/final");
    let (status, answer) = server
        .call(Method::GET, &path, Some(&server.key_a), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        answer["detail"],
        format!("checkpoint 'final' of training job {id} not found")
    );
    let (_, rival_list) = server
        .call(
            Method::GET,
            "/api/v1/org/rival/ws/main/training/jobs",
            Some(&server.key_b),
            None,
        )
        .await;
    assert_eq!(rival_list["total"], 0);

    // rival cannot reference acme's artifacts by org prefix either.
    push_fixtures(&rival, "rival").await;
    let mut body = docs_request(&server.model);
    body["config"]["dataset_ref"]["name"] = "acme/support-demos".into();
    let (status, answer) = server
        .call(
            Method::POST,
            "/api/v1/org/rival/ws/main/training/jobs",
            Some(&server.key_b),
            Some(body),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("acme/support-demos@0.1.0"),
        "{answer}"
    );
}
