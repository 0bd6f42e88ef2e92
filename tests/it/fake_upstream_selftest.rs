//! Self-tests of the fake upstream sparse registry ([`crate::support::fake_upstream`]).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::fake_upstream::{http_date, parse_http_date, FakeUpstream, Package};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build h2c client")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
        .to_vec();
    (status, headers, body)
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| v.to_str().expect("visible ASCII header").to_owned())
}

fn shared_paths() -> Vec<String> {
    let list = std::fs::read_to_string(FakeUpstream::shared_index_dir().join("paths.txt")).expect("read paths.txt");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn fake_upstream_config_json_shape() {
    let up = FakeUpstream::start().await;
    let port = up.port();
    assert_eq!(up.base_url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(up.index_url(), format!("sparse+http://127.0.0.1:{port}/index/"));
    assert_eq!(
        up.dl_base(),
        format!("http://127.0.0.1:{port}/dl/{{crate}}/{{version}}/download")
    );

    let (status, headers, body) = get(&client(), &format!("{}/index/config.json", up.base_url()), &[]).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("application/json"));
    let v: Value = serde_json::from_slice(&body).expect("config.json is JSON");
    let obj = v.as_object().expect("config.json is an object");
    assert_eq!(obj.len(), 2, "only dl and api: {v}");
    assert_eq!(v["dl"], up.dl_base());
    assert_eq!(v["api"], up.base_url());
    assert!(v["dl"].as_str().unwrap().contains("{crate}") && v["dl"].as_str().unwrap().contains("{version}"));
    assert_eq!(up.config_hits(), 1);
    assert_eq!(up.index_hits(), 0);
}

#[tokio::test]
async fn fake_upstream_serves_shared_index_byte_identical() {
    let up = FakeUpstream::start_with_shared_index().await;
    let paths = shared_paths();
    assert_eq!(paths.len(), 1500);
    let dir = FakeUpstream::shared_index_dir();
    // The first listed file and the largest one (about 4.9 MB).
    let largest = paths
        .iter()
        .max_by_key(|p| std::fs::metadata(dir.join(p)).map(|m| m.len()).unwrap_or(0))
        .unwrap()
        .clone();
    for (client, rel) in [
        (client(), &paths[0]),
        (h2_client(), &paths[0]),
        (client(), &largest),
        (h2_client(), &largest),
    ] {
        let on_disk = std::fs::read(dir.join(rel)).unwrap();
        let (status, headers, body) = get(&client, &format!("{}/index/{rel}", up.base_url()), &[]).await;
        assert_eq!(status, 200, "{rel}");
        assert_eq!(body.len(), on_disk.len(), "{rel}");
        assert!(body == on_disk, "{rel} differs from the file on disk");
        assert!(header(&headers, "etag").is_some());
        assert!(header(&headers, "last-modified").is_some());
        assert!(header(&headers, "content-encoding").is_none());
        // Every line is a real index line of the crate named by the path.
        let name = rel.rsplit('/').next().unwrap();
        let first: Value = serde_json::from_str(std::str::from_utf8(&body).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["name"].as_str().unwrap().to_ascii_lowercase(), name);
    }
    assert_eq!(up.hits(&format!("/index/{}", paths[0])), 2);
    assert_eq!(up.index_hits(), 4);
}

#[tokio::test]
async fn fake_upstream_add_raw_line_extends_a_shared_file() {
    let up = FakeUpstream::start_with_shared_index().await;
    let rel = &shared_paths()[0];
    let name = rel.rsplit('/').next().unwrap().to_owned();
    let on_disk = std::fs::read(FakeUpstream::shared_index_dir().join(rel)).unwrap();
    let line = format!(
        r#"{{"name":"{name}","vers":"999.0.0","deps":[],"cksum":"{}","features":{{}},"yanked":false}}"#,
        "0".repeat(64)
    );
    up.add_raw_line(&name, &line);
    let (status, _, body) = get(&client(), &up.index_file_url(&name), &[]).await;
    assert_eq!(status, 200);
    let mut expected = on_disk.clone();
    expected.extend_from_slice(line.as_bytes());
    expected.push(b'\n');
    assert!(body == expected);
    assert_eq!(up.index_body(&name).unwrap(), expected);
    // The file on disk is untouched.
    assert_eq!(
        std::fs::read(FakeUpstream::shared_index_dir().join(rel)).unwrap(),
        on_disk
    );
}

#[tokio::test]
async fn fake_upstream_unknown_paths_are_404() {
    let up = FakeUpstream::start_with_shared_index().await;
    up.add_crate(&Package::new("known", "1.0.0"));
    let c = client();
    for path in [
        "/index/no/ts/notshared-at-all",
        "/index/3/z/zzz",
        "/index/3/z/zz",
        "/index/paths.txt",
        "/index/KN/OW/known",
        "/index/%2e%2e/README.md",
        "/index/",
        "/dl/known/9.9.9/download",
        "/dl/nope/1.0.0/download",
        "/dl/known/1.0.0",
        "/",
        "/api/v1/crates",
    ] {
        let (status, _, _) = get(&c, &format!("{}{path}", up.base_url()), &[]).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = get(&c, &up.index_file_url("known"), &[]).await;
    assert_eq!(status, 200);
    let resp = c
        .post(format!("{}/index/config.json", up.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn fake_upstream_etag_and_304_round_trip() {
    let up = FakeUpstream::start().await;
    up.add_crate(&Package::new("etagged", "1.0.0"));
    let url = up.index_file_url("etagged");
    let c = client();

    let (status, h, body) = get(&c, &url, &[]).await;
    assert_eq!(status, 200);
    let etag = header(&h, "etag").expect("ETag");
    let lm = header(&h, "last-modified").expect("Last-Modified");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
        "{etag}"
    );
    assert!(sha256_hex(&body).starts_with(etag.trim_matches('"')));
    assert_eq!(http_date(parse_http_date(&lm).unwrap()), lm);
    assert_eq!(up.conditional_hits(), 0);

    // If-None-Match (also in a list and weak form) → 304, empty body, same ETag.
    for inm in [etag.clone(), format!("\"nope\", {etag}"), format!("W/{etag}")] {
        let (status, h, body) = get(&c, &url, &[("If-None-Match", &inm)]).await;
        assert_eq!(status, 304, "{inm}");
        assert!(body.is_empty());
        assert_eq!(header(&h, "etag").as_deref(), Some(etag.as_str()));
    }
    // Mismatch → 200 even though If-Modified-Since would say "not modified".
    let (status, _, _) = get(&c, &url, &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)]).await;
    assert_eq!(status, 200);
    // If-Modified-Since not older than Last-Modified → 304; older → 200.
    let (status, _, body) = get(&c, &url, &[("If-Modified-Since", &lm)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let later = http_date(parse_http_date(&lm).unwrap() + 100);
    assert_eq!(get(&c, &url, &[("If-Modified-Since", &later)]).await.0, 304);
    let older = http_date(parse_http_date(&lm).unwrap() - 1);
    assert_eq!(get(&c, &url, &[("If-Modified-Since", &older)]).await.0, 200);
    assert_eq!(up.conditional_hits(), 7);

    // A change (even within the same second) changes both validators.
    up.set_yanked("etagged", "1.0.0", true);
    let (status, h, body) = get(&c, &url, &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 200);
    let etag2 = header(&h, "etag").unwrap();
    let lm2 = header(&h, "last-modified").unwrap();
    assert_ne!(etag2, etag);
    assert!(parse_http_date(&lm2).unwrap() > parse_http_date(&lm).unwrap());
    assert_eq!(get(&c, &url, &[("If-Modified-Since", &lm)]).await.0, 200);
    let line: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(line["yanked"], true);
    up.set_yanked("etagged", "1.0.0", false);
    let (_, _, body) = get(&c, &url, &[]).await;
    let line: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(line["yanked"], false);
    assert_eq!(line.to_string() + "\n", String::from_utf8(body).unwrap());
}

#[tokio::test]
async fn fake_upstream_validators_off() {
    let up = FakeUpstream::start().await;
    up.add_crate(&Package::new("novalid", "1.0.0"));
    let url = up.index_file_url("novalid");
    let c = client();
    let (_, h, _) = get(&c, &url, &[]).await;
    let etag = header(&h, "etag").unwrap();
    let lm = header(&h, "last-modified").unwrap();

    up.set_validators(false);
    let (status, h, body) = get(&c, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(header(&h, "etag").is_none() && header(&h, "last-modified").is_none());
    assert!(!body.is_empty());
    let (status, h, body) = get(&c, &url, &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 200);
    assert!(header(&h, "etag").is_none());
    assert!(!body.is_empty());
    assert_eq!(get(&c, &url, &[("If-Modified-Since", &lm)]).await.0, 200);
    assert_eq!(up.conditional_hits(), 2);

    up.set_validators(true);
    assert_eq!(get(&c, &url, &[("If-None-Match", &etag)]).await.0, 304);
}

#[tokio::test]
async fn fake_upstream_add_crate_download_matches_cksum() {
    let up = FakeUpstream::start().await;
    let pkg = Package::new("My_Crate", "1.2.3+build.7")
        .dep("leafy", "0.2")
        .dep("other-dep", "=1.0.0")
        .feature("extra", &[])
        .file("src/extra.rs", "pub const X: u8 = 1;\n");
    up.add_crate(&pkg);

    // Index line: as crates.io writes a format-1 line (no `v`, no null `links`, a `pubtime`).
    let (status, _, body) = get(&client(), &format!("{}/index/my/_c/my_crate", up.base_url()), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body.clone()).unwrap(), pkg.index_line() + "\n");
    let line: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(line["name"], "My_Crate");
    assert_eq!(line["vers"], "1.2.3+build.7");
    assert_eq!(line["yanked"], false);
    assert!(line.get("v").is_none() && line.get("links").is_none(), "{line}");
    assert!(line["pubtime"].is_string());
    assert_eq!(line["features"], serde_json::json!({"extra": []}));
    let dep = &line["deps"][0];
    assert_eq!(
        dep,
        &serde_json::json!({"name":"leafy","req":"^0.2","features":[],"optional":false,"default_features":true,
                             "target":null,"kind":"normal"})
    );
    assert_eq!(line["deps"][1]["req"], "=1.0.0");

    // Expand the dl template like cargo and download.
    let cfg: Value = serde_json::from_slice(
        &get(&client(), &format!("{}/index/config.json", up.base_url()), &[])
            .await
            .2,
    )
    .unwrap();
    let url = cfg["dl"]
        .as_str()
        .unwrap()
        .replace("{crate}", "My_Crate")
        .replace("{version}", "1.2.3+build.7");
    assert_eq!(url, up.download_url("My_Crate", "1.2.3+build.7"));
    for c in [client(), h2_client()] {
        let (status, h, bytes) = get(&c, &url, &[("Accept-Encoding", "gzip")]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "content-type").as_deref(), Some("application/octet-stream"));
        assert_eq!(header(&h, "content-length"), Some(bytes.len().to_string()));
        assert!(header(&h, "content-encoding").is_none());
        assert_eq!(sha256_hex(&bytes), line["cksum"].as_str().unwrap());
        assert_eq!(bytes, pkg.crate_bytes());
    }
    assert_eq!(up.download_hits(), 2);
    assert_eq!(up.hits(&FakeUpstream::download_path("My_Crate", "1.2.3+build.7")), 2);

    // The tarball: entries under {name}-{vers}/, a manifest with the deps.
    let mut entries = Vec::new();
    let crate_bytes = pkg.crate_bytes();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&crate_bytes[..]));
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(e.header().mode().unwrap(), 0o644);
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        entries.push((path, s));
    }
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "My_Crate-1.2.3+build.7/Cargo.toml",
            "My_Crate-1.2.3+build.7/src/lib.rs",
            "My_Crate-1.2.3+build.7/src/extra.rs"
        ]
    );
    let manifest = &entries[0].1;
    assert!(manifest.contains("name = \"My_Crate\"") && manifest.contains("version = \"1.2.3+build.7\""));
    assert!(manifest.contains("edition = \"2021\""));
    assert!(manifest.contains("[dependencies]\n\"leafy\" = \"0.2\"\n\"other-dep\" = \"=1.0.0\"\n"));
    assert_eq!(
        entries[1].1,
        "pub fn hello() -> &'static str { \"My_Crate-1.2.3+build.7\" }\n"
    );
}

#[test]
fn fake_upstream_package_is_deterministic_and_padding_sizes() {
    let a = Package::new("detpkg", "0.1.0").dep("x", "1").size_padding(100_000);
    let b = Package::new("detpkg", "0.1.0").dep("x", "1").size_padding(100_000);
    assert_eq!(a.crate_bytes(), b.crate_bytes());
    assert_eq!(a.cksum(), b.cksum());
    assert_eq!(a.index_line(), b.index_line());
    let len = a.crate_bytes().len();
    assert!((100_000..102_000).contains(&len), "padded crate is {len} bytes");
    // Different name → different padding bytes.
    assert_ne!(Package::new("detpkh", "0.1.0").size_padding(100_000).cksum(), a.cksum());
    // Overrides replace the defaults.
    let c = Package::new("detpkg", "0.1.0").file("src/lib.rs", "pub fn other() {}\n");
    assert_ne!(c.cksum(), Package::new("detpkg", "0.1.0").cksum());
    assert_eq!(c.entries().len(), 2);
    // 1 KB .. 10 MB in reasonable time, even in a debug build.
    for size in [1_000, 10_000_000] {
        let start = Instant::now();
        let bytes = Package::new("bigpkg", "1.0.0").size_padding(size).crate_bytes();
        assert!(
            bytes.len() >= size && bytes.len() < size + size / 50 + 2_000,
            "{size} → {}",
            bytes.len()
        );
        eprintln!("{size} B padding: {} B crate in {:?}", bytes.len(), start.elapsed());
    }
}

#[tokio::test]
async fn fake_upstream_corrupt_downloads() {
    let up = FakeUpstream::start().await;
    let pkg = Package::new("corrupt", "1.0.0");
    up.add_crate(&pkg);
    let url = up.download_url("corrupt", "1.0.0");
    up.set_corrupt_downloads(true);
    let (status, h, bytes) = get(&client(), &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(bytes.len(), pkg.crate_bytes().len());
    assert_eq!(header(&h, "content-length"), Some(bytes.len().to_string()));
    assert_ne!(sha256_hex(&bytes), pkg.cksum());
    up.set_corrupt_downloads(false);
    let (_, _, bytes) = get(&client(), &url, &[]).await;
    assert_eq!(sha256_hex(&bytes), pkg.cksum());
}

#[tokio::test]
async fn fake_upstream_drop_mid_body() {
    let up = FakeUpstream::start().await;
    let pkg = Package::new("dropper", "1.0.0").size_padding(256 * 1024);
    up.add_crate(&pkg);
    let url = up.download_url("dropper", "1.0.0");
    up.set_drop_mid_body(true);
    for c in [client(), h2_client()] {
        let resp = c.get(&url).send().await.expect("headers arrive");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_length(), Some(pkg.crate_bytes().len() as u64));
        let err = resp.bytes().await.expect_err("body must fail");
        assert!(err.is_body() || err.is_decode() || err.is_request(), "{err:?}");
    }
    // Also while streaming slowly: some bytes arrive first.
    up.set_slow_body(Some(Duration::from_millis(5)));
    let mut resp = client().get(&url).send().await.unwrap();
    let mut got = 0;
    let err = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("body completed ({got} bytes)"),
            Err(e) => break e,
        }
    };
    // At most the half sent before the cut (what the server had not flushed when it
    // aborted the connection may be lost with it), never the whole.
    assert!(got > 0 && got <= pkg.crate_bytes().len() / 2, "{got} bytes: {err}");
    up.set_slow_body(None);
    up.set_drop_mid_body(false);
    let (_, _, bytes) = get(&client(), &url, &[]).await;
    assert_eq!(sha256_hex(&bytes), pkg.cksum());
}

#[tokio::test]
async fn fake_upstream_slow_body_streams_in_chunks() {
    let up = FakeUpstream::start().await;
    let pkg = Package::new("slowpoke", "1.0.0").size_padding(100 * 1024);
    up.add_crate(&pkg);
    up.set_slow_body(Some(Duration::from_millis(40)));
    let start = Instant::now();
    let mut resp = client().get(up.download_url("slowpoke", "1.0.0")).send().await.unwrap();
    let mut bytes = Vec::new();
    let mut chunks = 0;
    while let Some(c) = resp.chunk().await.unwrap() {
        chunks += 1;
        bytes.extend_from_slice(&c);
    }
    // 7 chunks of 16 KiB → 6 delays.
    assert!(start.elapsed() >= Duration::from_millis(240), "{:?}", start.elapsed());
    assert!(chunks >= 7, "{chunks}");
    assert_eq!(sha256_hex(&bytes), pkg.cksum());
}

#[tokio::test]
async fn fake_upstream_latency() {
    let up = FakeUpstream::start().await;
    up.set_latency(Duration::from_millis(300));
    let start = Instant::now();
    let (status, _, _) = get(&client(), &format!("{}/index/config.json", up.base_url()), &[]).await;
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Counted on arrival, before the latency is over.
    // Long enough that the request is surely still waiting when it is seen counted.
    up.set_latency(Duration::from_secs(2));
    let base = up.base_url();
    let pending = tokio::spawn(async move { get(&client(), &format!("{base}/nothing"), &[]).await.0 });
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.total_hits() < 2 {
        assert!(Instant::now() < deadline, "request not counted on arrival");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!pending.is_finished());
    assert_eq!(pending.await.unwrap(), 404);
}

#[tokio::test]
async fn fake_upstream_fail_next() {
    let up = FakeUpstream::start().await;
    up.add_crate(&Package::new("flaky", "1.0.0"));
    let c = client();
    let url = up.index_file_url("flaky");
    up.fail_next(2, 503);
    up.set_retry_after(Some(1));
    let (status, h, body) = get(&c, &url, &[]).await;
    assert_eq!(status, 503);
    assert_eq!(header(&h, "retry-after").as_deref(), Some("1"));
    assert!(!body.is_empty());
    assert_eq!(get(&c, &up.download_url("flaky", "1.0.0"), &[]).await.0, 503);
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    assert_eq!(get(&c, &up.download_url("flaky", "1.0.0"), &[]).await.0, 200);
    up.set_retry_after(None);
    up.fail_next(1, 429);
    let (status, h, _) = get(&c, &url, &[]).await;
    assert_eq!(status, 429);
    assert!(header(&h, "retry-after").is_none());
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    assert_eq!(up.total_hits(), 6);
}

#[tokio::test]
async fn fake_upstream_status_override() {
    let up = FakeUpstream::start().await;
    up.add_crate(&Package::new("overridden", "1.0.0"));
    let c = client();
    for status in [500u16, 503, 429] {
        up.set_status_override(Some(status));
        for url in [
            format!("{}/index/config.json", up.base_url()),
            up.index_file_url("overridden"),
            up.download_url("overridden", "1.0.0"),
            format!("{}/unknown", up.base_url()),
        ] {
            let (s, _, body) = get(&c, &url, &[]).await;
            assert_eq!(s.as_u16(), status, "{url}");
            assert!(!body.is_empty() && body.len() < 200);
        }
    }
    up.set_status_override(None);
    assert_eq!(get(&c, &up.index_file_url("overridden"), &[]).await.0, 200);
}

#[tokio::test]
async fn fake_upstream_go_down_and_come_back() {
    let mut up = FakeUpstream::start().await;
    let pkg = Package::new("phoenix", "1.0.0").size_padding(256 * 1024);
    up.add_crate(&pkg);
    let port = up.port();
    let c = client();
    assert_eq!(get(&c, &up.index_file_url("phoenix"), &[]).await.0, 200);

    // An in-flight slow download is cut when the upstream goes down.
    up.set_slow_body(Some(Duration::from_millis(100)));
    let mut inflight = c.get(up.download_url("phoenix", "1.0.0")).send().await.unwrap();
    assert_eq!(inflight.status(), 200);
    up.go_down().await;
    assert!(!up.is_up());
    let cut = loop {
        match inflight.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("in-flight body completed although the upstream went down"),
            Err(e) => break e,
        }
    };
    assert!(cut.is_body() || cut.is_request() || cut.is_decode(), "{cut:?}");

    // Refused from now on (fresh client: no pooled connection).
    let err = client()
        .get(up.index_file_url("phoenix"))
        .send()
        .await
        .expect_err("upstream is down");
    assert!(err.is_connect(), "{err:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // The pooled client fails too.
    assert!(c.get(up.index_file_url("phoenix")).send().await.is_err());
    up.go_down().await; // idempotent

    up.set_slow_body(None);
    up.come_back().await;
    assert!(up.is_up());
    assert_eq!(up.port(), port);
    let (status, _, bytes) = get(&c, &up.download_url("phoenix", "1.0.0"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&bytes), pkg.cksum());
    assert_eq!(get(&h2_client(), &up.index_file_url("phoenix"), &[]).await.0, 200);
    assert_eq!(up.hits(&FakeUpstream::index_path("phoenix")), 2);

    // Twice more, quickly.
    for _ in 0..2 {
        up.go_down().await;
        up.come_back().await;
    }
    assert_eq!(get(&client(), &up.index_file_url("phoenix"), &[]).await.0, 200);
}

#[tokio::test]
async fn fake_upstream_hit_counting() {
    let up = FakeUpstream::start().await;
    up.add_crate(&Package::new("abc", "1.0.0"));
    up.add_crate(&Package::new("abcd", "1.0.0"));
    let c = client();
    let base = up.base_url();
    get(&c, &format!("{base}/index/config.json"), &[]).await;
    get(&c, &format!("{base}/index/3/a/abc"), &[]).await;
    get(&c, &format!("{base}/index/3/a/abc"), &[("If-None-Match", "\"x\"")]).await;
    get(&c, &format!("{base}/index/ab/cd/abcd"), &[]).await;
    get(&c, &format!("{base}/index/2/zz"), &[]).await;
    get(&c, &up.download_url("abc", "1.0.0"), &[]).await;
    get(&c, &format!("{base}/dl/abc/7.0.0/download"), &[]).await;
    get(&c, &format!("{base}/elsewhere"), &[]).await;
    assert_eq!(up.hits("/index/3/a/abc"), 2);
    assert_eq!(up.hits(&FakeUpstream::index_path("ABCD")), 1);
    assert_eq!(up.hits("/index/2/zz"), 1);
    assert_eq!(up.hits("/dl/abc/1.0.0/download"), 1);
    assert_eq!(up.hits("/never"), 0);
    assert_eq!(up.config_hits(), 1);
    assert_eq!(up.index_hits(), 4);
    assert_eq!(up.download_hits(), 2);
    assert_eq!(up.conditional_hits(), 1);
    assert_eq!(up.total_hits(), 8);
    let log = up.requests();
    assert_eq!(log.len(), 8);
    assert_eq!(log[2].header("if-none-match"), Some("\"x\""));
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].version, "HTTP/1.1");

    // Concurrent requests over h2 are all counted.
    let h2 = h2_client();
    let url = up.index_file_url("abc");
    let futs: Vec<_> = (0..20)
        .map(|_| {
            let (h2, url) = (h2.clone(), url.clone());
            tokio::spawn(async move { h2.get(url).send().await.unwrap().status() })
        })
        .collect();
    for f in futs {
        assert_eq!(f.await.unwrap(), 200);
    }
    assert_eq!(up.hits("/index/3/a/abc"), 22);
    assert_eq!(up.requests().last().unwrap().version, "HTTP/2.0");

    up.reset_hits();
    assert_eq!(
        (
            up.total_hits(),
            up.index_hits(),
            up.download_hits(),
            up.config_hits(),
            up.conditional_hits()
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(up.hits("/index/3/a/abc"), 0);
    assert!(up.requests().is_empty());
}

#[test]
fn fake_upstream_http_dates() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    for secs in [0, 784_111_777, 951_782_400, 1_800_000_000, 4_102_444_800] {
        assert_eq!(parse_http_date(&http_date(secs)), Some(secs));
    }
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(parse_http_date("garbage"), None);
}

// ---------------------------------------------------------------------------------------------
// Real cargo against the fake upstream (blocking API, sync test)
// ---------------------------------------------------------------------------------------------

/// `cargo <args>` in `dir` with only our CARGO_HOME/target dir and no proxies.
fn run_cargo(home: &Path, target: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(crate::support::cargo::cargo_bin());
    crate::support::daemon::scrub_env(&mut cmd);
    cmd.args(args)
        .current_dir(dir)
        .env("CARGO_HOME", home)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never")
        .env("NO_PROXY", "127.0.0.1")
        .env("CARGO_BUILD_JOBS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo")
}

#[test]
fn fake_upstream_real_cargo_builds_packages() {
    let mut up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("fu-leaf", "0.2.0"));
    up.add_crate(
        &Package::new("fu-leaf", "0.2.1").file("src/lib.rs", "pub fn hello() -> &'static str { \"fu-leaf-0.2.1\" }\n"),
    );
    up.set_yanked("fu-leaf", "0.2.1", true);
    up.add_crate(&Package::new("fu-top", "1.0.0").dep("fu-leaf", "0.2").file(
        "src/lib.rs",
        "pub fn hello() -> String { format!(\"top+{}\", fu_leaf::hello()) }\n",
    ));

    let tmp = tempfile::Builder::new()
        .prefix("fake-upstream-cargo-")
        .tempdir()
        .unwrap();
    let (home, target, proj) = (
        tmp.path().join("home"),
        tmp.path().join("target"),
        tmp.path().join("proj"),
    );
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(proj.join("src")).unwrap();
    // The fake upstream stands in for the default registry via source replacement, so nothing
    // leaves 127.0.0.1.
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[source.crates-io]\nreplace-with = \"fake-upstream\"\n\n[source.fake-upstream]\nregistry = \"{}\"\n\n\
             [net]\nretry = 0\n",
            up.index_url()
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("Cargo.toml"),
        "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nfu-top = \"1\"\n",
    )
    .unwrap();
    std::fs::write(
        proj.join("src/main.rs"),
        "fn main() { println!(\"{}\", fu_top::hello()); }\n",
    )
    .unwrap();

    let out = run_cargo(&home, &target, &proj, &["run", "-q"]);
    assert!(
        out.status.success(),
        "cargo run failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0.2.1 is yanked, so 0.2.0 is picked.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "top+fu-leaf-0.2.0");
    assert_eq!(up.download_hits(), 2);
    assert!(up.hits(&FakeUpstream::index_path("fu-top")) >= 1);
    assert!(up.hits(&FakeUpstream::index_path("fu-leaf")) >= 1);
    let lock = std::fs::read_to_string(proj.join("Cargo.lock")).unwrap();
    assert!(lock.contains(&Package::new("fu-leaf", "0.2.0").cksum()));

    // With the upstream down, an offline-capable rebuild still works from cargo's caches.
    up.go_down_blocking();
    let out = run_cargo(&home, &target, &proj, &["build", "-q", "--offline"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    up.come_back_blocking();

    // A fresh lockfile revalidates the index with conditional requests.
    std::fs::remove_file(proj.join("Cargo.lock")).unwrap();
    up.reset_hits();
    let out = run_cargo(&home, &target, &proj, &["generate-lockfile"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(up.conditional_hits() >= 2, "{:?}", up.requests());
}
