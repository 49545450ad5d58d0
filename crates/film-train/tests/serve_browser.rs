//! The page of `film-train serve` in a real browser: headless Chromium, driven over the
//! DevTools protocol, picks a dataset image, types a question with a word the vocabulary
//! lacks, asks, and must show that word marked, the model's five answers (the first being
//! what the API answers), the heat map at the size `ask --explain` draws it, one γ/β chart
//! per conditioned block and the dataset's questions. It saves a screenshot to
//! `target/serve-browser/page.png`.
//!
//! Ignored by `cargo test`: it needs Chromium (Debian's `chromium`; `CHROMIUM` names
//! another binary), which `.ci/run` installs before running it with `--ignored`. By
//! default it serves a `tiny` run trained on the fixture; `FILM_SERVE_RUN=RUN
//! FILM_SERVE_DATA=DIR` serve a trained run instead (how README's screenshot was taken),
//! and `FILM_SERVE_QUESTION` replaces the question.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use candle_core::Device;
use film_train::serve::{App, Server};
use film_train::train::{train, TrainRequest};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> PathBuf {
    workspace().join("fixtures/clevr-mini")
}

/// Kills the browser however the test ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts headless Chromium and returns it with its DevTools port.
fn start_browser(profile: &Path) -> (Browser, u16) {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut child = Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary} (install Debian's `chromium`, or set CHROMIUM): {e}"));
    let stderr = child.stderr.take().unwrap();
    let browser = Browser(child);
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
            let port = rest.split('/').next().unwrap().parse().unwrap();
            return (browser, port);
        }
    }
    panic!("{binary} exited without printing its DevTools address");
}

/// A DevTools session with one page.
struct Page {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    fn open(port: u16) -> Page {
        let targets: Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target in {targets}"))
            .to_string();
        let (socket, _) = tungstenite::connect(url.as_str()).unwrap();
        Page { socket, next_id: 1 }
    }

    fn send(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket.send(Message::text(request.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.send(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true; `what` names the wait in the failure.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            if self.eval(expression) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let error = self.eval("document.getElementById('error').textContent");
        panic!("the page did not get to {what} in {TIMEOUT:?} (its error line: {error})");
    }
}

#[test]
#[ignore = "needs Chromium: .ci/run installs it and runs this test"]
fn the_page_answers_and_shows_the_heat_map_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (run, data) = match (
        std::env::var_os("FILM_SERVE_RUN"),
        std::env::var_os("FILM_SERVE_DATA"),
    ) {
        (Some(run), Some(data)) => (PathBuf::from(run), PathBuf::from(data)),
        _ => {
            let run = dir.path().join("run");
            let request = TrainRequest {
                data: fixture(),
                preset: film_train::presets::by_name("tiny").unwrap(),
                out: run.clone(),
                epochs: Some(2),
                minutes: None,
                seed: 5,
                val_limit: None,
                cache_dir: Some(dir.path().join("cache")),
                features_dir: None,
                quiet: true,
            };
            train(&request, &Device::Cpu).unwrap();
            (run, fixture())
        }
    };
    let question = std::env::var("FILM_SERVE_QUESTION")
        .unwrap_or_else(|_| "How many zorbles or cubes are there?".into());
    let app = App::load(&run, Some(&data), None).unwrap();
    let image_file = app.gallery[0].file.clone();
    let dataset_questions = app.gallery[0].questions.len();
    let image = clevr::image::decode_png(&app.gallery[0].path).unwrap();
    let conditioned = app
        .asker
        .config
        .model
        .vision
        .conditioned
        .iter()
        .filter(|&&c| c)
        .count();
    let unknown: Vec<String> = app
        .asker
        .words(&question)
        .into_iter()
        .filter(|w| !w.known)
        .map(|w| w.word)
        .collect();
    let server = Server::start(app, "127.0.0.1:0".parse().unwrap()).unwrap();
    let api: Value = ureq::post(&format!("{}/api/ask", server.url()))
        .send_json(json!({"question": question, "image": 0}))
        .unwrap()
        .into_json()
        .unwrap();

    let (_browser, port) = start_browser(&dir.path().join("profile"));
    let mut page = Page::open(port);
    page.send("Page.enable", json!({}));
    page.send("Page.navigate", json!({"url": format!("{}/", server.url())}));
    page.wait_for(
        "document.querySelectorAll('#gallery img.thumb').length > 0 && \
         document.querySelector('#gallery img.thumb').naturalWidth > 0",
        "a loaded thumbnail",
    );
    page.eval("document.querySelector('#gallery img.thumb').click()");
    page.wait_for(
        &format!("document.querySelectorAll('#dataset tbody tr').length === {dataset_questions}"),
        "the dataset's questions of the picked image",
    );
    assert_eq!(
        page.eval("document.getElementById('picked').getAttribute('src')"),
        json!("/api/images/0")
    );
    page.eval("document.getElementById('question').focus()");
    page.send("Input.insertText", json!({"text": question}));
    let marked = json!(unknown).to_string();
    page.wait_for(
        &format!(
            "JSON.stringify([...document.querySelectorAll('#words span.unknown')].map(s => s.textContent)) === \
             {marked:?} && document.querySelectorAll('#words span').length > 0"
        ),
        "the unknown words marked",
    );
    page.eval("document.getElementById('ask').click()");
    page.wait_for(
        "document.querySelectorAll('#answers li').length === 5 && \
         document.getElementById('heatmap').naturalWidth > 0",
        "five answers and the heat map",
    );
    let first = page.eval("document.querySelector('#answers li .name').textContent");
    assert_eq!(
        first, api["answers"][0]["answer"],
        "the page's answer for {image_file}"
    );
    let (w, h) = film_train::plots::overlay_size(&image);
    let size = page.eval(
        "(() => { const m = document.getElementById('heatmap'); return [m.naturalWidth, m.naturalHeight]; })()",
    );
    assert_eq!(size, json!([w, h]), "the heat map's size");
    assert_eq!(
        page.eval("document.querySelectorAll('#film .block svg').length"),
        json!(conditioned)
    );
    assert_eq!(
        page.eval("document.getElementById('error').textContent"),
        json!("")
    );

    // The page fits its content so the screenshot shows all of it.
    let height = page
        .eval("document.documentElement.scrollHeight")
        .as_u64()
        .unwrap();
    page.send(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": height.max(800), "deviceScaleFactor": 1, "mobile": false}),
    );
    let shot = page.send("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let out = workspace().join("target/serve-browser");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("page.png"), &png).unwrap();
    server.stop().unwrap();
}
