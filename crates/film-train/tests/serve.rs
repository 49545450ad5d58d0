//! `film-train serve` end to end: a `tiny` run trained on the fixture, served on a free
//! loopback port, asked over HTTP. The API must answer exactly what the model answers
//! when asked directly, refuse each kind of bad request with its 4xx and a message, and
//! keep serving afterwards, also under concurrent clients.

use std::path::{Path, PathBuf};

use base64::Engine;
use candle_core::Device;
use film_train::ask::Asker;
use film_train::presets;
use film_train::serve::{api, App, Server};
use film_train::train::{train, TrainRequest};
use serde_json::{json, Value};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini")
}

const IMAGE_0: &str = "images/val/CLEVR_val_000000.png";

fn trained_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let request = TrainRequest {
        data: fixture(),
        preset: presets::by_name("tiny").unwrap(),
        out: run.clone(),
        epochs: Some(2),
        minutes: None,
        seed: 5,
        val_limit: None,
        cache_dir: Some(dir.join("cache")),
        features_dir: None,
        quiet: true,
    };
    train(&request, &Device::Cpu).unwrap();
    run
}

/// (status, body) of a request; a 4xx or 5xx is a result here, not an error.
/// A `tiny` run trained in `dir`, served on a free loopback port by two workers.
fn serve(dir: &Path) -> (PathBuf, Server) {
    let run = trained_run(dir);
    let app = App::load(&run, Some(&fixture()), Some(2)).unwrap();
    (run, Server::start(app, "127.0.0.1:0".parse().unwrap()).unwrap())
}

fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Vec<u8>) {
    let request = ureq::request(method, url);
    let result = match body {
        Some(body) => request.set("content-type", "application/json").send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
    (status, bytes)
}

fn json_call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let (status, bytes) = call(method, url, body);
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {url}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

/// The (width, height) of PNG bytes.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    (reader.info().width, reader.info().height)
}

/// A PNG whose header claims `width` x `height` pixels over a few bytes of data.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture().join(IMAGE_0)).unwrap();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes.truncate(200);
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The top answers the API gave, as (answer, probability).
fn answers(reply: &Value) -> Vec<(String, f64)> {
    reply["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["answer"].as_str().unwrap().to_string(),
                a["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_same_answers(got: &[(String, f64)], want: &[film_train::ask::Candidate]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((answer, p), c) in got.iter().zip(want) {
        assert_eq!(answer, &c.answer, "{got:?} vs {want:?}");
        assert!((p - f64::from(c.probability)).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn the_api_answers_as_the_model_does_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (run, server) = serve(dir.path());
    assert!(server.addr.ip().is_loopback());
    let url = server.url();
    let direct = Asker::load(&run, &Device::Cpu).unwrap();
    let image = clevr::image::decode_png(&fixture().join(IMAGE_0)).unwrap();

    let (status, page) = call("GET", &format!("{url}/"), None);
    assert_eq!(status, 200);
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("<title>FiLM: ask the model</title>"));

    let (status, list) = json_call("GET", &format!("{url}/api/images"), None);
    assert_eq!(status, 200);
    let files: Vec<&str> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["CLEVR_val_000000.png", "CLEVR_val_000001.png"]);

    let (status, file) = call("GET", &format!("{url}/api/images/0"), None);
    assert_eq!(status, 200);
    assert_eq!(file, std::fs::read(fixture().join(IMAGE_0)).unwrap());
    let (status, thumb) = call("GET", &format!("{url}/api/images/0/thumbnail"), None);
    assert_eq!(status, 200);
    let (w, h) = png_size(&thumb);
    assert_eq!(w.max(h) as usize, api::THUMBNAIL_SIDE);

    // The dataset questions, checked against their answers with the model's own.
    let (status, checked) = json_call("GET", &format!("{url}/api/images/0/questions"), None);
    assert_eq!(status, 200);
    let checked = checked["questions"].as_array().unwrap();
    assert!(!checked.is_empty());
    for q in checked {
        let question = q["question"].as_str().unwrap();
        let model = direct.ask(&image, question).unwrap();
        assert_eq!(
            q["model"]["answer"].as_str().unwrap(),
            model.answers[0].answer,
            "{q}"
        );
        let correct = q["model"]["answer"] == q["answer"];
        assert_eq!(q["correct"].as_bool(), Some(correct), "{q}");
    }

    let (status, words) = json_call(
        "POST",
        &format!("{url}/api/words"),
        Some(&json!({"question": "How many zorbles are there?"}).to_string()),
    );
    assert_eq!(status, 200);
    assert_eq!(words["unknown_words"], json!(["zorbles"]));

    // A dataset question about a dataset image: the model's answers, its γ and β, the heat
    // map drawn as `ask --explain` draws it, and the dataset's answer.
    let question = checked[0]["question"].as_str().unwrap();
    let body = json!({"question": question, "image": 0}).to_string();
    let (status, reply) = json_call("POST", &format!("{url}/api/ask"), Some(&body));
    assert_eq!(status, 200, "{reply}");
    let want = direct.ask(&image, question).unwrap();
    assert_same_answers(&answers(&reply), &want.answers);
    assert_eq!(reply["answers"].as_array().unwrap().len(), 5);
    assert_eq!(reply["ground_truth"], checked[0]["answer"]);
    assert_eq!(reply["unknown_words"], json!([]));
    let vision = presets::by_name("tiny").unwrap().model.vision;
    let film = reply["film"].as_array().unwrap();
    assert_eq!(film.len(), vision.conditioned.iter().filter(|&&c| c).count());
    for (block, want) in film.iter().zip(&want.film) {
        assert_eq!(block["block"].as_u64(), Some(want.block as u64));
        let gamma: Vec<f32> = serde_json::from_value(block["gamma"].clone()).unwrap();
        assert_eq!(gamma.len(), vision.channels);
        assert_eq!(gamma, want.gamma);
    }
    let heat: Vec<f64> = serde_json::from_value(reply["heat_map"]["values"].clone()).unwrap();
    assert!((heat.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{heat:?}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(reply["heat_map_png"].as_str().unwrap())
        .unwrap();
    assert_eq!(png, direct.explain_png(&image, question, &want).unwrap());
    let (w, h) = film_train::plots::overlay_size(&image);
    assert_eq!(png_size(&png), (w, h));

    // The same image uploaded gets the same answers; an unknown word is reported.
    let upload = b64(&std::fs::read(fixture().join(IMAGE_0)).unwrap());
    let odd = "How many zorble cubes are there?";
    let body = json!({"question": odd, "png_base64": upload}).to_string();
    let (status, reply) = json_call("POST", &format!("{url}/api/ask"), Some(&body));
    assert_eq!(status, 200, "{reply}");
    assert_same_answers(&answers(&reply), &direct.ask(&image, odd).unwrap().answers);
    assert_eq!(reply["unknown_words"], json!(["zorble"]));
    assert_eq!(
        reply["image"],
        json!({"upload": {"width": image.width, "height": image.height}})
    );
    assert_eq!(reply["ground_truth"], Value::Null);

    let ask = |body: &Value| body.to_string();
    let long_question = "is there a cube ".repeat(100);
    let bad: Vec<(&str, String, u16, &str)> = vec![
        (
            "upload over the size limit",
            ask(
                &json!({"question": "Is there a cube?", "png_base64": b64(&vec![0x89; api::MAX_UPLOAD_BYTES + 3000])}),
            ),
            413,
            "over the limit of 4194304",
        ),
        (
            "body over the size limit",
            format!("{{\"question\": \"{}\"}}", "a".repeat(api::MAX_BODY_BYTES + 10)),
            413,
            "length limit exceeded",
        ),
        (
            "a GIF",
            ask(&json!({"question": "Is there a cube?", "png_base64": b64(b"GIF89a\x01\x00\x01\x00")})),
            415,
            "not a PNG",
        ),
        (
            "a PNG bomb under the loader's bound",
            ask(&json!({"question": "Is there a cube?", "png_base64": b64(&png_claiming(4000, 4000))})),
            422,
            "claims 4000 x 4000 pixels, more than the 4194304 pixels",
        ),
        (
            "a PNG bomb over the loader's bound",
            ask(&json!({"question": "Is there a cube?", "png_base64": b64(&png_claiming(60_000, 60_000))})),
            422,
            "claims 60000 x 60000 pixels",
        ),
        (
            "a truncated PNG",
            ask(
                &json!({"question": "Is there a cube?", "png_base64": b64(&std::fs::read(fixture().join(IMAGE_0)).unwrap()[..60])}),
            ),
            422,
            "not a readable PNG",
        ),
        (
            "not base64",
            ask(&json!({"question": "Is there a cube?", "png_base64": "%%%"})),
            400,
            "not valid base64",
        ),
        (
            "an empty question",
            ask(&json!({"question": "", "image": 0})),
            400,
            "empty",
        ),
        (
            "a question of punctuation",
            ask(&json!({"question": " ? ", "image": 0})),
            400,
            "empty",
        ),
        (
            "a question over the token limit",
            ask(&json!({"question": long_question, "image": 0})),
            400,
            "tokens, more than the limit of 256",
        ),
        (
            "a question over the byte limit",
            ask(&json!({"question": "a".repeat(api::MAX_QUESTION_BYTES + 1), "image": 0})),
            400,
            "over the limit of 8192",
        ),
        (
            "malformed JSON",
            "{\"question\": ".to_string(),
            400,
            "malformed JSON request",
        ),
        (
            "a field of the wrong type",
            ask(&json!({"question": 3, "image": 0})),
            400,
            "invalid type",
        ),
        (
            "an unknown field",
            ask(&json!({"question": "Is there a cube?", "imag": 0})),
            400,
            "unknown field",
        ),
        (
            "no image",
            ask(&json!({"question": "Is there a cube?"})),
            400,
            "exactly one of",
        ),
        (
            "two images",
            ask(&json!({"question": "Is there a cube?", "image": 0, "png_base64": upload})),
            400,
            "exactly one of",
        ),
        (
            "an image not listed",
            ask(&json!({"question": "Is there a cube?", "image": 7})),
            404,
            "no dataset image 7",
        ),
    ];
    let good = json!({"question": "Is there a cube?", "image": 1}).to_string();
    for (what, body, want_status, want_message) in &bad {
        let (status, reply) = json_call("POST", &format!("{url}/api/ask"), Some(body));
        let message = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {reply}"));
        assert_eq!(status, *want_status, "{what}: {message}");
        assert!(message.contains(want_message), "{what}: {message}");
        let (status, reply) = json_call("POST", &format!("{url}/api/ask"), Some(&good));
        assert_eq!(status, 200, "after {what}: {reply}");
    }
    for (method, path, want_status, want_message) in [
        ("GET", "/nowhere", 404, "no route GET /nowhere"),
        ("GET", "/api/images/9", 404, "no dataset image 9"),
        ("GET", "/api/images/x", 400, "Invalid URL"),
        ("DELETE", "/api/ask", 405, "DELETE is not allowed on /api/ask"),
    ] {
        let (status, bytes) = call(method, &format!("{url}{path}"), None);
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, want_status, "{method} {path}: {text}");
        assert!(text.contains(want_message), "{method} {path}: {text}");
    }
    server.stop().unwrap();
}

#[test]
fn concurrent_clients_get_the_answers_the_model_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (run, server) = serve(dir.path());
    let direct = Asker::load(&run, &Device::Cpu).unwrap();
    let images: Vec<_> = ["CLEVR_val_000000.png", "CLEVR_val_000001.png"]
        .iter()
        .map(|f| clevr::image::decode_png(&fixture().join("images/val").join(f)).unwrap())
        .collect();
    let questions = [
        "How many cubes are there?",
        "Is there a red sphere?",
        "What color is the large cylinder?",
        "Are there more cubes than spheres?",
    ];
    let url = server.url();
    std::thread::scope(|s| {
        for client in 0..12 {
            let (url, images, direct) = (&url, &images, &direct);
            s.spawn(move || {
                for k in 0..4 {
                    let (image, question) = ((client + k) % 2, questions[(client * 3 + k) % questions.len()]);
                    let body = json!({"question": question, "image": image}).to_string();
                    let (status, reply) = json_call("POST", &format!("{url}/api/ask"), Some(&body));
                    assert_eq!(status, 200, "{reply}");
                    let want = direct.ask(&images[image], question).unwrap();
                    assert_same_answers(&answers(&reply), &want.answers);
                }
            });
        }
    });
    server.stop().unwrap();
}
