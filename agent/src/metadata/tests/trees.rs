//! Every tree path through the router, with a fake source and a fake neighbour table.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::fake::{mac, server, FakeSource, NETWORK};
use crate::metadata::app::{App, FnPeerMacs};
use crate::metadata::{
    router, InstanceMetadata, MetadataOptions, MetadataServer, MetadataSource as _,
};

/// The neighbour table of the tests: .10 → server 1's MAC, .11 → server 2's, .12 → a MAC no
/// port has, .99 → a MAC with no server; anything else has no entry.
fn neighbours() -> crate::metadata::IdentifyPeer {
    let table: HashMap<Ipv4Addr, [u8; 6]> = HashMap::from([
        (Ipv4Addr::new(198, 51, 100, 10), mac(1)),
        (Ipv4Addr::new(198, 51, 100, 11), mac(2)),
        (Ipv4Addr::new(198, 51, 100, 12), mac(77)),
        (Ipv4Addr::new(198, 51, 100, 99), mac(99)),
    ]);
    Arc::new(move |peer: SocketAddr| match peer.ip() {
        std::net::IpAddr::V4(ip) => table.get(&ip).copied(),
        std::net::IpAddr::V6(_) => None,
    })
}

/// Servers 1 (198.51.100.10) and 2 (.11); server 3 is registered at .12 with MAC 3, but the
/// neighbour table says .12 has MAC 77 (a spoofed source address). Server 2 has no user data.
fn servers() -> Vec<InstanceMetadata> {
    let mut two = server(2, 11);
    two.user_data = None;
    vec![server(1, 10), two, server(3, 12)]
}

fn app_with(source: FakeSource, options: MetadataOptions) -> (Router, Arc<FakeSource>) {
    let source = Arc::new(source);
    (
        router(NETWORK, source.clone(), options, neighbours()),
        source,
    )
}

fn app() -> Router {
    app_with(FakeSource::new(servers()), MetadataOptions::default()).0
}

/// One answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    fn json(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/json");
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Asserts a 200 with a text body and returns it.
    fn ok(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert!(
            self.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{:?}",
            self.headers
        );
        self.text()
    }
}

/// Sends one request from `198.51.100.<last>`.
async fn send(
    app: &Router,
    last: u8,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Answer {
    let peer = SocketAddr::from(([198, 51, 100, last], 40_000));
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .extension(ConnectInfo(peer));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(builder.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, last: u8, path: &str) -> Answer {
    send(app, last, Method::GET, path, &[], Body::empty()).await
}

const UUID1: &str = "00000001-1111-4222-8333-444455556666";
const UUID2: &str = "00000002-1111-4222-8333-444455556666";

#[tokio::test]
async fn ec2_versions_and_version_listings() {
    let app = app();
    assert_eq!(
        get(&app, 10, "/").await.ok(),
        "1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest"
    );
    for path in [
        "/latest",
        "/latest/",
        "/2009-04-04/",
        "/1.0",
        "/2007-12-15/",
    ] {
        assert_eq!(
            get(&app, 10, path).await.ok(),
            "meta-data/\nuser-data",
            "{path}"
        );
    }
    // Server 2 has no user data.
    assert_eq!(get(&app, 11, "/latest/").await.ok(), "meta-data/");
    for path in [
        "/2010-01-01/",
        "/2010-01-01/meta-data/",
        "/foo",
        "/latest/dynamic/",
        "/latest/meta-data/nope",
        "/latest/api",
    ] {
        let answer = get(&app, 10, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.text(), "Not found");
        assert!(answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
    }
}

#[tokio::test]
async fn ec2_meta_data_tree() {
    let app = app();
    let keys = "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n\
                instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\n\
                placement/\npublic-hostname\npublic-ipv4\npublic-keys/\nreservation-id\n\
                security-groups";
    for version in ["latest", "2009-04-04", "1.0"] {
        assert_eq!(
            get(&app, 10, &format!("/{version}/meta-data/")).await.ok(),
            keys
        );
        assert_eq!(
            get(&app, 10, &format!("/{version}/meta-data")).await.ok(),
            keys
        );
    }
    let leaves = [
        ("ami-id", "ami-00000042"),
        ("ami-launch-index", "1"),
        ("ami-manifest-path", "(unknown)"),
        ("block-device-mapping/", "ami\nroot"),
        ("block-device-mapping/ami", "vda"),
        ("block-device-mapping/root", "/dev/vda"),
        ("hostname", "web1.example.test"),
        ("local-hostname", "web1.example.test"),
        ("public-hostname", "web1.example.test"),
        ("instance-action", "none"),
        ("instance-id", UUID1),
        ("instance-type", "m1.small"),
        ("local-ipv4", "198.51.100.10"),
        ("placement/", "availability-zone"),
        ("placement", "availability-zone"),
        ("placement/availability-zone", "nova"),
        ("public-ipv4", ""),
        ("reservation-id", "r-00000001"),
        ("security-groups", ""),
        // Keys sorted by name: alpha is 0, zeta is 1.
        ("public-keys/", "0=alpha\n1=zeta"),
        ("public-keys", "0=alpha\n1=zeta"),
        ("public-keys/0/", "openssh-key"),
        ("public-keys/1", "openssh-key"),
        (
            "public-keys/0/openssh-key",
            "ssh-ed25519 AAAAalpha1 alpha@test\n",
        ),
        (
            "public-keys/1/openssh-key",
            "ssh-ed25519 AAAAzeta1 zeta@test\n",
        ),
        // A leaf asked for as a directory is still the leaf.
        ("hostname/", "web1.example.test"),
    ];
    for (path, expected) in leaves {
        assert_eq!(
            get(&app, 10, &format!("/latest/meta-data/{path}"))
                .await
                .ok(),
            expected,
            "{path}"
        );
    }
    for path in [
        "public-keys/2/",
        "public-keys/2/openssh-key",
        "public-keys/00/openssh-key",
        "public-keys/+1/openssh-key",
        "public-keys/-1",
        "public-keys/0/other",
        "public-keys/alpha",
        "placement/region",
        "block-device-mapping/ephemeral0",
        "hostname/extra",
        "user-data",
    ] {
        assert_eq!(
            get(&app, 10, &format!("/latest/meta-data/{path}"))
                .await
                .status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Another caller sees its own values.
    assert_eq!(
        get(&app, 11, "/latest/meta-data/instance-id").await.ok(),
        UUID2
    );
    assert_eq!(
        get(&app, 11, "/2009-04-04/meta-data/public-keys/1/openssh-key")
            .await
            .ok(),
        "ssh-ed25519 AAAAzeta2 zeta@test\n"
    );
}

#[tokio::test]
async fn ec2_without_public_keys_and_user_data() {
    let mut bare = server(1, 10);
    bare.public_keys = BTreeMap::new();
    bare.user_data = None;
    let (app, _) = app_with(FakeSource::new(vec![bare]), MetadataOptions::default());
    let listing = get(&app, 10, "/latest/meta-data/").await.ok();
    assert!(!listing.contains("public-keys"), "{listing}");
    assert!(listing.ends_with("public-ipv4\nreservation-id\nsecurity-groups"));
    for path in [
        "/latest/meta-data/public-keys/",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/latest/user-data",
    ] {
        let answer = get(&app, 10, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!answer.text().is_empty());
    }
}

#[tokio::test]
async fn user_data_is_served_as_raw_bytes() {
    let mut binary = server(1, 10);
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x1f, 0x8b]).collect();
    binary.user_data = Some(bytes.clone());
    let (app, _) = app_with(FakeSource::new(vec![binary]), MetadataOptions::default());
    for path in [
        "/latest/user-data",
        "/2009-04-04/user-data",
        "/openstack/latest/user_data",
        "/openstack/2012-08-10/user_data",
    ] {
        let answer = get(&app, 10, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.body.as_ref(), bytes.as_slice(), "{path}");
        assert_eq!(answer.headers["content-type"], "text/plain");
    }
    let app = self::app();
    assert_eq!(
        get(&app, 10, "/latest/user-data").await.ok(),
        "#!/bin/sh\necho server-1\n"
    );
    for path in ["/latest/user-data", "/openstack/latest/user_data"] {
        let answer = get(&app, 11, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.text(), "No user data for this instance");
    }
}

#[tokio::test]
async fn openstack_listings() {
    let app = app();
    let versions = "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\n2018-08-27\nlatest";
    assert_eq!(get(&app, 10, "/openstack").await.ok(), versions);
    assert_eq!(get(&app, 10, "/openstack/").await.ok(), versions);
    let all = "meta_data.json\nnetwork_data.json\npassword\nuser_data\nvendor_data.json\nvendor_data2.json";
    for path in [
        "/openstack/latest",
        "/openstack/latest/",
        "/openstack/2018-08-27/",
        "/openstack/2016-10-06",
    ] {
        assert_eq!(get(&app, 10, path).await.ok(), all, "{path}");
    }
    // Files appear from the version that introduced them, as in nova.
    assert_eq!(
        get(&app, 10, "/openstack/2012-08-10/").await.ok(),
        "meta_data.json\nuser_data"
    );
    assert_eq!(
        get(&app, 10, "/openstack/2013-04-04/").await.ok(),
        "meta_data.json\npassword\nuser_data"
    );
    assert_eq!(
        get(&app, 10, "/openstack/2015-10-15/").await.ok(),
        "meta_data.json\nnetwork_data.json\npassword\nuser_data\nvendor_data.json"
    );
    // No user data: no user_data entry.
    assert_eq!(
        get(&app, 11, "/openstack/latest/").await.ok(),
        "meta_data.json\nnetwork_data.json\npassword\nvendor_data.json\nvendor_data2.json"
    );
    for path in [
        "/openstack/2011-01-01/",
        "/openstack/2011-01-01/meta_data.json",
        "/openstack/2012-08-10/network_data.json",
        "/openstack/2012-08-10/password",
        "/openstack/2015-10-15/vendor_data2.json",
        "/openstack/latest/nothing.json",
        "/openstack/latest/meta_data.json/extra",
        "/openstack/latest/../latest/meta_data.json",
    ] {
        let answer = get(&app, 10, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn openstack_documents() {
    let app = app();
    let first = get(&app, 10, "/openstack/latest/meta_data.json")
        .await
        .json();
    let seed = first["random_seed"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(seed)
        .unwrap();
    assert_eq!(decoded.len(), 512);
    let mut expected = json!({
        "uuid": UUID1,
        "name": "web1",
        "hostname": "web1.example.test",
        "public_keys": {"alpha": "ssh-ed25519 AAAAalpha1 alpha@test", "zeta": "ssh-ed25519 AAAAzeta1 zeta@test"},
        "keys": [
            {"name": "alpha", "type": "ssh", "data": "ssh-ed25519 AAAAalpha1 alpha@test"},
            {"name": "zeta", "type": "ssh", "data": "ssh-ed25519 AAAAzeta1 zeta@test"},
        ],
        "launch_index": 1,
        "availability_zone": "nova",
        "project_id": "p-1",
        "random_seed": seed,
        "meta": {"role": "web"},
        "devices": [],
    });
    assert_eq!(first, expected);
    // Every version serves the same document, with a fresh seed each time.
    let second = get(&app, 10, "/openstack/2012-08-10/meta_data.json")
        .await
        .json();
    assert_ne!(second["random_seed"], first["random_seed"]);
    expected["random_seed"] = second["random_seed"].clone();
    assert_eq!(second, expected);

    let network = get(&app, 10, "/openstack/latest/network_data.json")
        .await
        .json();
    assert_eq!(network, server(1, 10).network_data);
    assert_eq!(
        get(&app, 10, "/openstack/2015-10-15/vendor_data.json")
            .await
            .json(),
        json!({"cloud": "hyperlet"})
    );
    assert_eq!(
        get(&app, 10, "/openstack/latest/vendor_data2.json")
            .await
            .json(),
        json!({})
    );
    assert_eq!(
        get(&app, 11, "/openstack/latest/meta_data.json")
            .await
            .json()["uuid"],
        UUID2
    );
}

#[tokio::test]
async fn password_is_set_once() {
    let (app, source) = app_with(FakeSource::new(servers()), MetadataOptions::default());
    let post = |last: u8, body: Body| {
        let app = app.clone();
        async move {
            send(
                &app,
                last,
                Method::POST,
                "/openstack/latest/password",
                &[],
                body,
            )
            .await
        }
    };
    assert_eq!(get(&app, 10, "/openstack/latest/password").await.ok(), "");
    let answer = post(10, Body::from("c2VjcmV0")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        get(&app, 10, "/openstack/latest/password").await.ok(),
        "c2VjcmV0"
    );
    assert_eq!(
        get(&app, 10, "/openstack/2013-04-04/password").await.ok(),
        "c2VjcmV0"
    );
    let again = post(10, Body::from("other")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(
        get(&app, 10, "/openstack/latest/password").await.ok(),
        "c2VjcmV0"
    );
    // Another server's password is its own.
    assert_eq!(get(&app, 11, "/openstack/latest/password").await.ok(), "");

    // Over 1020 bytes: refused, declared or streamed without a length; nothing stored.
    let big = "x".repeat(1021);
    assert_eq!(
        post(11, Body::from(big.clone())).await.status,
        StatusCode::BAD_REQUEST
    );
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let streamed = post(11, Body::from_stream(chunks)).await;
    assert_eq!(streamed.status, StatusCode::BAD_REQUEST);
    assert!(streamed.text().contains("1020"), "{}", streamed.text());
    assert_eq!(
        post(11, Body::empty()).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(11, Body::from(vec![0xff, 0xfe])).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(source.password(UUID2), None);
    // Exactly 1020 bytes is fine.
    let exact = "y".repeat(1020);
    assert_eq!(
        post(11, Body::from(exact.clone())).await.status,
        StatusCode::OK
    );
    assert_eq!(source.password(UUID2).as_deref(), Some(exact.as_str()));

    let put = send(
        &app,
        10,
        Method::PUT,
        "/openstack/latest/password",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.headers["allow"], "GET, HEAD, POST");
    // Old versions have no password file.
    assert_eq!(
        send(
            &app,
            10,
            Method::POST,
            "/openstack/2012-08-10/password",
            &[],
            Body::from("p")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let broken = FakeSource {
        broken_store: true,
        ..FakeSource::new(servers())
    };
    let (app, _) = app_with(broken, MetadataOptions::default());
    let failed = send(
        &app,
        10,
        Method::POST,
        "/openstack/latest/password",
        &[],
        Body::from("p"),
    )
    .await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn callers_are_identified_by_address_and_mac_only() {
    let (app, source) = app_with(FakeSource::new(servers()), MetadataOptions::default());
    // No port has .99.
    let unknown = get(&app, 99, "/latest/meta-data/instance-id").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.text(), "No instance for 198.51.100.99");
    // .12 belongs to server 3, but the neighbour table has another MAC for it.
    let spoofed = get(&app, 12, "/openstack/latest/meta_data.json").await;
    assert_eq!(spoofed.status, StatusCode::NOT_FOUND);
    assert_eq!(spoofed.text(), "No instance for 198.51.100.12");
    // No neighbour entry at all: refused before the source is asked.
    let before = source.identify_calls.load(Ordering::SeqCst);
    let no_mac = get(&app, 13, "/").await;
    assert_eq!(no_mac.status, StatusCode::NOT_FOUND);
    assert_eq!(no_mac.text(), "No instance for 198.51.100.13");
    assert_eq!(source.identify_calls.load(Ordering::SeqCst), before);
    // Headers never change who is asking.
    for header in ["x-forwarded-for", "x-real-ip", "forwarded", "x-instance-id"] {
        let value = if header == "forwarded" {
            "for=198.51.100.11"
        } else {
            "198.51.100.11"
        };
        let answer = send(
            &app,
            10,
            Method::GET,
            "/latest/meta-data/instance-id",
            &[(header, value)],
            Body::empty(),
        )
        .await;
        assert_eq!(answer.ok(), UUID1, "{header}");
        let answer = send(
            &app,
            99,
            Method::GET,
            "/latest/meta-data/instance-id",
            &[(header, value)],
            Body::empty(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{header}");
    }
    // A router served without connect info refuses rather than guessing.
    let bare = Request::builder().uri("/").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(bare).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Another network's server does not answer here.
    let other = router(
        "another-network",
        source.clone(),
        MetadataOptions::default(),
        neighbours(),
    );
    assert_eq!(get(&other, 10, "/").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn methods_other_than_get_are_refused() {
    let app = app();
    for (method, path) in [
        (Method::POST, "/latest/meta-data/hostname"),
        (Method::PUT, "/"),
        (Method::DELETE, "/openstack/latest/meta_data.json"),
        (Method::POST, "/openstack"),
    ] {
        let answer = send(&app, 10, method.clone(), path, &[], Body::from("x")).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(answer.headers["allow"], "GET, HEAD");
    }
    // An unknown path stays 404 whatever the method.
    assert_eq!(
        send(&app, 10, Method::DELETE, "/nothing", &[], Body::empty())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let head = send(
        &app,
        10,
        Method::HEAD,
        "/latest/meta-data/instance-id",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
}

const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "x-aws-ec2-metadata-token";

async fn token(app: &Router, last: u8, ttl: &str) -> Answer {
    send(
        app,
        last,
        Method::PUT,
        "/latest/api/token",
        &[(TTL, ttl)],
        Body::empty(),
    )
    .await
}

#[tokio::test]
async fn session_tokens() {
    let app = app();
    // Asking for a token.
    for bad in ["0", "21601", "abc", "", "-5", "1e3"] {
        assert_eq!(
            token(&app, 10, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad:?}"
        );
    }
    let missing = send(
        &app,
        10,
        Method::PUT,
        "/latest/api/token",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let proxied = send(
        &app,
        10,
        Method::PUT,
        "/latest/api/token",
        &[(TTL, "60"), ("x-forwarded-for", "198.51.100.10")],
        Body::empty(),
    )
    .await;
    assert_eq!(proxied.status, StatusCode::FORBIDDEN);
    let wrong_method = get(&app, 10, "/latest/api/token").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers["allow"], "PUT");
    assert_eq!(token(&app, 99, "60").await.status, StatusCode::NOT_FOUND);

    let issued = token(&app, 10, "21600").await;
    let t1 = issued.ok();
    assert_eq!(issued.headers[TTL], "21600");
    assert!(t1.len() >= 40, "{t1}");
    assert_ne!(token(&app, 10, "60").await.ok(), t1);

    // Tokens are optional by default, but a presented one must be valid.
    assert_eq!(
        get(&app, 10, "/latest/meta-data/instance-id").await.ok(),
        UUID1
    );
    let with = |last: u8, path: &'static str, t: String| {
        let app = app.clone();
        async move {
            send(
                &app,
                last,
                Method::GET,
                path,
                &[(TOKEN, t.as_str())],
                Body::empty(),
            )
            .await
        }
    };
    assert_eq!(
        with(10, "/latest/meta-data/instance-id", t1.clone())
            .await
            .ok(),
        UUID1
    );
    assert_eq!(with(10, "/", t1.clone()).await.status, StatusCode::OK);
    let bogus = with(10, "/latest/meta-data/instance-id", "bogus".into()).await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);
    // Bound to its server: server 2 cannot use server 1's token.
    assert_eq!(
        with(11, "/latest/meta-data/instance-id", t1.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The OpenStack tree does not look at tokens.
    assert_eq!(
        with(10, "/openstack/latest/password", "bogus".into())
            .await
            .status,
        StatusCode::OK
    );

    // Expiry.
    let short = token(&app, 10, "1").await.ok();
    assert_eq!(
        with(10, "/latest/meta-data/", short.clone()).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        with(10, "/latest/meta-data/", short).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn required_tokens() {
    let options = MetadataOptions {
        require_tokens: true,
        ..MetadataOptions::default()
    };
    let (app, _) = app_with(FakeSource::new(servers()), options);
    for path in [
        "/",
        "/latest/meta-data/instance-id",
        "/2009-04-04/user-data",
    ] {
        let answer = get(&app, 10, path).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(answer.text().contains("PUT /latest/api/token"));
    }
    // The OpenStack tree stays open, as in nova.
    assert_eq!(
        get(&app, 10, "/openstack/latest/meta_data.json")
            .await
            .status,
        StatusCode::OK
    );
    let t = token(&app, 10, "300").await.ok();
    let answer = send(
        &app,
        10,
        Method::GET,
        "/latest/meta-data/instance-id",
        &[(TOKEN, t.as_str())],
        Body::empty(),
    )
    .await;
    assert_eq!(answer.ok(), UUID1);
    // Unidentified callers still get 404, not 401.
    assert_eq!(
        get(&app, 99, "/latest/meta-data/").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn rate_limits_per_source_ip_and_per_server() {
    let options = MetadataOptions {
        require_tokens: false,
        requests_per_second: 1,
        burst: 3,
    };
    // Server 1 has two ports: .10 and .11 (with server 2's MAC, which the table gives .11).
    let mut second_port = server(1, 11);
    second_port.mac = crate::net::neigh::format_mac(&mac(2));
    let (app, _) = app_with(FakeSource::new(vec![server(1, 10), second_port]), options);
    for _ in 0..3 {
        assert_eq!(
            get(&app, 10, "/latest/meta-data/").await.status,
            StatusCode::OK
        );
    }
    let limited = get(&app, 10, "/latest/meta-data/").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "1");
    // The other port has a fresh IP bucket, but its server has used its burst.
    let same_server = get(&app, 11, "/latest/meta-data/").await;
    assert_eq!(same_server.status, StatusCode::TOO_MANY_REQUESTS);
    // Unknown callers are limited per IP before any lookup.
    for _ in 0..3 {
        assert_eq!(get(&app, 99, "/").await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        get(&app, 99, "/").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // One second later a token is back.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        get(&app, 10, "/latest/meta-data/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_slow_source_hits_the_deadline() {
    let slow = FakeSource {
        slow: Some(Duration::from_millis(500)),
        ..FakeSource::new(servers())
    };
    let app = App::new(
        NETWORK,
        Arc::new(slow),
        MetadataOptions::default(),
        Arc::new(FnPeerMacs(neighbours())),
        Duration::from_millis(100),
    )
    .into_router();
    // `identify` must not block; the store behind the password may, under the deadline.
    assert_eq!(
        get(&app, 10, "/latest/meta-data/instance-id").await.status,
        StatusCode::OK
    );
    let answer = get(&app, 10, "/openstack/latest/password").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.text().contains("in time"));
}

#[tokio::test]
async fn options_and_arguments_are_validated_before_anything() {
    MetadataOptions::default().validate().unwrap();
    for options in [
        MetadataOptions {
            requests_per_second: 0,
            ..MetadataOptions::default()
        },
        MetadataOptions {
            burst: 0,
            ..MetadataOptions::default()
        },
        MetadataOptions {
            burst: MetadataOptions::MAX_RATE + 1,
            ..MetadataOptions::default()
        },
    ] {
        let err = options.validate().unwrap_err();
        assert!(
            matches!(err, crate::metadata::MetadataError::InvalidOptions(_)),
            "{err}"
        );
    }
    let source: Arc<dyn crate::metadata::MetadataSource> = Arc::new(FakeSource::new(vec![]));
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let bad = MetadataOptions {
        burst: 0,
        ..MetadataOptions::default()
    };
    assert!(matches!(
        MetadataServer::start("qdhcp-x", NETWORK, listen, source.clone(), bad).await,
        Err(crate::metadata::MetadataError::InvalidOptions(_))
    ));
    for id in ["", "a b", &"n".repeat(65)] {
        assert!(matches!(
            MetadataServer::start(
                "qdhcp-x",
                id,
                listen,
                source.clone(),
                MetadataOptions::default()
            )
            .await,
            Err(crate::metadata::MetadataError::InvalidNetworkId(_))
        ));
    }
    let missing = format!(
        "hyperlet-test-missing-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let err = MetadataServer::start(
        &missing,
        NETWORK,
        listen,
        source.clone(),
        MetadataOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            crate::metadata::MetadataError::Namespace {
                source: crate::net::NetError::NamespaceNotFound(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        MetadataServer::start(
            "../etc",
            NETWORK,
            listen,
            source,
            MetadataOptions::default()
        )
        .await,
        Err(crate::metadata::MetadataError::Namespace {
            source: crate::net::NetError::InvalidName { .. },
            ..
        })
    ));
}

#[tokio::test]
async fn answers_and_unknown_callers_are_counted() {
    let app = App::new(
        NETWORK,
        Arc::new(FakeSource::new(servers())),
        MetadataOptions::default(),
        Arc::new(FnPeerMacs(neighbours())),
        Duration::from_secs(5),
    );
    let counters = app.counters();
    let app = app.into_router();
    get(&app, 10, "/latest/meta-data/instance-id").await.ok();
    get(&app, 11, "/openstack/latest/meta_data.json")
        .await
        .json();
    // A path that does not exist: a 404, but the caller is known.
    assert_eq!(
        get(&app, 10, "/no/such/tree").await.status,
        StatusCode::NOT_FOUND
    );
    // A spoofed address (.12's MAC is no port's) and an address without a neighbour entry.
    for last in [12, 13] {
        assert_eq!(get(&app, last, "/").await.status, StatusCode::NOT_FOUND);
    }
    let stats = counters.snapshot();
    assert_eq!(stats.answers_with(200), 2, "{stats:?}");
    assert_eq!(stats.answers_with(404), 3, "{stats:?}");
    assert_eq!(stats.unknown_callers, 2, "{stats:?}");
    assert_eq!(stats.other_answers, 0, "{stats:?}");
}
