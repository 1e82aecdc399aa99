//! What a running service says about itself: `rpc.describe` and
//! `rpc.discover`.

use busrpc_core::{ClientConfig, ServerConfig};
use serde_json::{json, Value};

use crate::fixture::{client, patient, serve};
use crate::harness::{unique_service, Flavor, Harness};

/// Every server answers `rpc.describe` by itself with its method names,
/// sorted, as `busrpc describe` prints them.
pub async fn a_service_describes_its_methods(h: &dyn Harness) {
    let service = unique_service("describe");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let described = client
        .call_raw(
            &service,
            busrpc_core::DESCRIBE_METHOD,
            serde_json::Value::Null,
        )
        .await
        .expect("rpc.describe");
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(described.get())
        .expect("JSON")["methods"]
        .as_array()
        .expect("a list of methods")
        .iter()
        .map(|name| name.as_str().expect("a name").to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted");
    for expected in ["echo", "subtract", "get_data", "sleep", "panic"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("rpc.")), "{names:?}");
    client.close().await;
    server.handle.shutdown().await;
}

/// Every server answers `rpc.discover` with an OpenRPC document listing
/// its methods (with their params where the service describes them).
pub async fn a_service_answers_rpc_discover(h: &dyn Harness) {
    let service = unique_service("discover");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let document: Value = client
        .call(&service, busrpc_core::DISCOVER_METHOD, ())
        .await
        .expect("rpc.discover");
    assert_eq!(document["openrpc"], "1.3.2", "{document}");
    assert_eq!(document["info"]["title"], service.as_str());
    let methods = document["methods"].as_array().expect("methods");
    let subtract = methods
        .iter()
        .find(|m| m["name"] == "subtract")
        .expect("subtract is listed");
    if h.flavor() == Flavor::Macro {
        let names: Vec<&Value> = subtract["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| &p["name"])
            .collect();
        assert_eq!(names, [&json!("minuend"), &json!("subtrahend")]);
    } else {
        assert_eq!(subtract["x-busrpc-params"], "undescribed");
    }
    assert!(
        !methods
            .iter()
            .any(|m| m["name"].as_str().unwrap_or("").starts_with("rpc.")),
        "{document}"
    );
    client.close().await;
    server.handle.shutdown().await;
}
