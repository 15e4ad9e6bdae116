//! The web page at `/`: served from the binary, and driven in a real
//! browser (headless Chromium, Debian's `chromium` package, installed by
//! `make system`) with a fake microphone fed from a WAV: live captions over
//! `/v1/realtime`, and the file-upload path with its SRT/VTT rendering.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_words, fixture, free_port, wav_16k, Service};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_page_is_served_from_the_binary_with_a_strict_policy() {
    let svc = Service::start(&[]);
    let res = common::client()
        .get(format!("{}/", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    for needle in [
        "<html lang=\"en\">",
        "/v1/realtime?intent=transcription",
        "Download SRT",
        "aria-live",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert!(!html.contains("<script src"), "no external scripts");
}

/// Headless Chromium, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_bin() -> &'static str {
    for b in ["chromium", "chromium-browser"] {
        if Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return b;
        }
    }
    panic!("chromium not found: run `make system` (installs Debian's chromium package)");
}

impl Browser {
    fn start(fake_mic: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(chromium_bin())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
            ])
            .arg(format!(
                "--use-file-for-fake-audio-capture={}%noloop",
                fake_mic.display()
            ))
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        Browser {
            child,
            _profile: profile,
            port,
        }
    }

    /// A DevTools connection to the browser's page.
    async fn page(&self) -> Cdp {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = common::client()
                .get(format!("http://127.0.0.1:{}/json/list", self.port))
                .send()
                .await;
            if let Ok(r) = list {
                let targets: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(url) = targets
                    .as_array()
                    .and_then(|a| a.iter().find(|t| t["type"] == "page"))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                {
                    let (ws, _) = tokio_tungstenite::connect_async(url)
                        .await
                        .expect("devtools");
                    return Cdp { ws, next_id: 1 };
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium's DevTools did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A minimal Chrome DevTools Protocol client.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("devtools answer")
                .expect("devtools open")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Polls `expr` until `done` holds on its value.
    async fn until(
        &mut self,
        expr: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expr).await;
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} never satisfied; last {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.until("document.readyState", Duration::from_secs(20), |v| {
            v == "complete"
        })
        .await;
    }
}

/// The clip with silence around it, as the fake microphone's WAV.
fn mic_wav(dir: &std::path::Path) -> std::path::PathBuf {
    let mut r = hound::WavReader::open(fixture("hello.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    let mut samples = vec![0i16; 16_000];
    samples.extend(r.samples::<i16>().map(Result::unwrap));
    samples.extend(vec![0i16; 16_000 * 4]);
    let path = dir.join("mic.wav");
    std::fs::write(&path, wav_16k(&samples)).unwrap();
    path
}

#[tokio::test]
async fn in_chromium_the_microphone_becomes_captions_and_a_file_becomes_a_transcript() {
    let svc = Service::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let browser = Browser::start(&mic_wav(dir.path()));
    let mut page = browser.page().await;
    page.open(&format!("{}/", svc.base)).await;

    // Live captions from the fake microphone.
    page.eval("document.getElementById('live-start').click()")
        .await;
    let captions = page
        .until(
            "document.querySelector('#captions p.final') ? document.getElementById('captions').innerText : ''",
            Duration::from_secs(60),
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    let status = page
        .eval("document.getElementById('live-status').innerText")
        .await;
    assert!(!status.as_str().unwrap().contains("Error"), "{status}");
    assert_words(captions.as_str().unwrap(), &["hello", "world"]);
    page.eval("document.getElementById('live-stop').click()")
        .await;

    // The file path: pick the clip, transcribe, and render SRT and VTT.
    let doc = page.call("DOM.getDocument", json!({})).await;
    let input = page
        .call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": "#file"}),
        )
        .await;
    page.call(
        "DOM.setFileInputFiles",
        json!({"nodeId": input["nodeId"], "files": [fixture("clip10.wav")]}),
    )
    .await;
    page.eval("document.getElementById('file-go').click()")
        .await;
    let text = page
        .until(
            "document.getElementById('transcript').value",
            Duration::from_secs(60),
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    assert_words(
        text.as_str().unwrap(),
        &["quick", "brown", "fox", "lazy", "dog"],
    );
    let srt = page.eval("render.srt()").await;
    let srt = srt.as_str().unwrap();
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> "), "{srt}");
    let cues = common::cues(srt, ',', true);
    assert!(
        !cues.is_empty() && cues.windows(2).all(|w| w[0].0 <= w[1].0),
        "{srt}"
    );
    let vtt = page.eval("render.vtt()").await;
    assert!(
        vtt.as_str().unwrap().starts_with("WEBVTT\n\n00:00:0"),
        "{vtt}"
    );
    assert_eq!(
        page.eval("document.getElementById('dl-srt').disabled")
            .await,
        false,
        "downloads enabled"
    );
}
