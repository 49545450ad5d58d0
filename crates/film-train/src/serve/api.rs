//! The JSON API: routes, request limits and the errors a client gets back.
//!
//! Every handler that touches the model or decodes an image does it on the blocking pool,
//! behind a semaphore with one permit per inference worker, so the async executor only
//! moves bytes and the memory in use is bounded by the workers, not by the clients.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use clevr::image::{ImageError, RgbImage};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::App;
use crate::ask::{AskError, BlockFilm, Candidate, Word};

/// The largest PNG a client may upload. CLEVR's images are about 200 KB.
pub const MAX_UPLOAD_BYTES: usize = 4 << 20;
/// The most pixels an uploaded PNG's header may claim: the decoder allocates by the header,
/// so this bounds the memory one request can take whatever the file's size.
pub const MAX_UPLOAD_PIXELS: u64 = 2048 * 2048;
/// A request body: a base64 upload (4 bytes per 3) and room for the question and JSON.
pub const MAX_BODY_BYTES: usize = MAX_UPLOAD_BYTES.div_ceil(3) * 4 + (64 << 10);
/// The longest question text read, before it is tokenized; the token limit
/// (`clevr::dataset::MAX_QUESTION_TOKENS`) then applies to what is left.
pub const MAX_QUESTION_BYTES: usize = 8 << 10;
/// The longer side of the thumbnails of `GET /api/images/{index}/thumbnail`.
pub const THUMBNAIL_SIDE: usize = 120;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body: {message}")]
    Body { status: StatusCode, message: String },
    #[error("malformed JSON request: {0}")]
    Json(serde_json::Error),
    #[error("give the image as exactly one of \"image\" (a dataset image index) and \"png_base64\" (an uploaded PNG)")]
    ImageChoice,
    #[error("no dataset image {index}: the server lists {count} (GET /api/images)")]
    NoImage { index: usize, count: usize },
    #[error("png_base64: not valid base64: {0}")]
    Base64(base64::DecodeError),
    #[error("png_base64: the upload is {bytes} bytes, over the limit of {MAX_UPLOAD_BYTES}")]
    UploadTooLarge { bytes: usize },
    #[error("png_base64: the upload is not a PNG (it does not start with the PNG signature)")]
    NotPng,
    #[error("question: {bytes} bytes, over the limit of {MAX_QUESTION_BYTES}")]
    QuestionBytes { bytes: usize },
    #[error("question: {0}")]
    Question(AskError),
    #[error("png_base64: {0}")]
    Upload(ImageError),
    #[error("dataset image {file}: {source}")]
    DatasetImage { file: String, source: ImageError },
    #[error("{0}")]
    Model(AskError),
    #[error("no route {method} {path}; see GET / for the page and docs/training.md for the API")]
    NoRoute { method: Method, path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: Method, path: String },
    #[error("the inference worker failed: {0}")]
    Worker(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Body { status, .. } => *status,
            ApiError::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotPng => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Upload(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoImage { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Json(_)
            | ApiError::ImageChoice
            | ApiError::Base64(_)
            | ApiError::QuestionBytes { .. }
            | ApiError::Question(_) => StatusCode::BAD_REQUEST,
            ApiError::DatasetImage { .. } | ApiError::Model(_) | ApiError::Worker(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// The question's own faults are the client's; the model's are the server's.
impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::EmptyQuestion | AskError::QuestionTooLong { .. } | AskError::Encode { .. } => {
                ApiError::Question(e)
            }
            AskError::Image(e) => ApiError::Upload(e),
            e => ApiError::Model(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/images", get(list_images))
        .route("/api/images/{index}", get(image_file))
        .route("/api/images/{index}/thumbnail", get(thumbnail))
        .route("/api/images/{index}/questions", get(image_questions))
        .route("/api/words", post(words))
        .route("/api/ask", post(ask))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// The page, embedded so that the binary serves it from anywhere.
static PAGE: &str = include_str!("page.html");

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method,
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method,
        path: uri.path().to_string(),
    }
}

/// Runs `work` on the blocking pool once an inference permit is free.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    work: impl FnOnce(&App) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = app
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Worker(e.to_string()))?;
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&app)
    })
    .await
    .map_err(|e| ApiError::Worker(e.to_string()))?
}

#[derive(Serialize)]
struct ImageEntry<'a> {
    index: usize,
    file: &'a str,
    questions: usize,
}

async fn list_images(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let images: Vec<ImageEntry> = app
        .gallery
        .iter()
        .enumerate()
        .map(|(index, image)| ImageEntry {
            index,
            file: &image.file,
            questions: image.questions.len(),
        })
        .collect();
    Json(json!({
        "split": super::gallery::SPLIT,
        "count": images.len(),
        "images": images,
    }))
}

fn png_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

fn gallery_index(app: &App, index: usize) -> Result<(), ApiError> {
    if index < app.gallery.len() {
        Ok(())
    } else {
        Err(ApiError::NoImage {
            index,
            count: app.gallery.len(),
        })
    }
}

impl App {
    fn dataset_image(&self, index: usize) -> Result<RgbImage, ApiError> {
        let image = &self.gallery[index];
        clevr::image::decode_png(&image.path).map_err(|source| ApiError::DatasetImage {
            file: image.file.clone(),
            source,
        })
    }
}

async fn image_file(
    State(app): State<Arc<App>>,
    UrlPath(index): UrlPath<usize>,
) -> Result<Response, ApiError> {
    gallery_index(&app, index)?;
    let bytes = blocking(&app, move |app| {
        let image = &app.gallery[index];
        std::fs::read(&image.path).map_err(|source| ApiError::DatasetImage {
            file: image.file.clone(),
            source: ImageError::Open {
                path: image.path.clone(),
                source,
            },
        })
    })
    .await?;
    Ok(png_response(bytes))
}

async fn thumbnail(
    State(app): State<Arc<App>>,
    UrlPath(index): UrlPath<usize>,
) -> Result<Response, ApiError> {
    gallery_index(&app, index)?;
    let bytes = blocking(&app, move |app| {
        let image = app.dataset_image(index)?;
        let scale = THUMBNAIL_SIDE as f64 / image.width.max(image.height).max(1) as f64;
        let (w, h) = (
            ((image.width as f64 * scale).round() as usize).max(1),
            ((image.height as f64 * scale).round() as usize).max(1),
        );
        let small = clevr::image::resize(&image, w, h, clevr::image::Filter::Bilinear);
        encode_png(&small).map_err(|e| ApiError::Worker(format!("encoding a thumbnail: {e}")))
    })
    .await?;
    Ok(png_response(bytes))
}

fn encode_png(image: &RgbImage) -> Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.pixels)?;
    writer.finish()?;
    Ok(bytes)
}

/// A dataset question, its ground-truth answer and what the model answers.
#[derive(Serialize)]
struct Checked {
    question: String,
    answer: String,
    model: Candidate,
    correct: bool,
}

async fn image_questions(
    State(app): State<Arc<App>>,
    UrlPath(index): UrlPath<usize>,
) -> Result<Json<serde_json::Value>, ApiError> {
    gallery_index(&app, index)?;
    blocking(&app, move |app| {
        let image = app.dataset_image(index)?;
        let entry = &app.gallery[index];
        let texts: Vec<&str> = entry.questions.iter().map(|(q, _)| q.as_str()).collect();
        let model = app.asker.answer_all(&image, &texts).map_err(ApiError::Model)?;
        let checked: Vec<Checked> = entry
            .questions
            .iter()
            .zip(model)
            .map(|((question, answer), model)| Checked {
                correct: model.answer == *answer,
                question: question.clone(),
                answer: answer.clone(),
                model,
            })
            .collect();
        let right = checked.iter().filter(|c| c.correct).count();
        Ok(Json(json!({
            "index": index,
            "file": entry.file,
            "correct": right,
            "questions": checked,
        })))
    })
    .await
}

fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| ApiError::Body {
        status: rejection.status(),
        message: rejection.body_text(),
    })?;
    serde_json::from_slice(&body).map_err(ApiError::Json)
}

fn check_question_bytes(question: &str) -> Result<(), ApiError> {
    if question.len() > MAX_QUESTION_BYTES {
        return Err(ApiError::QuestionBytes {
            bytes: question.len(),
        });
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WordsRequest {
    question: String,
}

async fn words(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: WordsRequest = parse(body)?;
    check_question_bytes(&request.question)?;
    let words = app.asker.words(&request.question);
    let unknown: Vec<&str> = words
        .iter()
        .filter(|w| !w.known)
        .map(|w| w.word.as_str())
        .collect();
    Ok(Json(json!({
        "words": words,
        "unknown_words": unknown,
        // With the <START> and <END> the encoder adds.
        "tokens": words.len() + 2,
        "max_tokens": clevr::dataset::MAX_QUESTION_TOKENS,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskRequest {
    question: String,
    #[serde(default)]
    image: Option<usize>,
    #[serde(default)]
    png_base64: Option<String>,
}

enum Source {
    Dataset(usize),
    /// The PNG, base64.
    Upload(String),
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ImageRef {
    Dataset { index: usize, file: String },
    Upload { width: usize, height: usize },
}

#[derive(Serialize)]
struct HeatMap {
    width: usize,
    height: usize,
    /// Row-major, top row first; they sum to 1.
    values: Vec<f32>,
    live_channels: usize,
    channels: usize,
    label: &'static str,
}

#[derive(Serialize)]
struct AskResponse {
    question: String,
    image: ImageRef,
    words: Vec<Word>,
    unknown_words: Vec<String>,
    answers: Vec<Candidate>,
    /// The dataset's answer when the question is one of the dataset image's own.
    ground_truth: Option<String>,
    film: Vec<BlockFilm>,
    heat_map: HeatMap,
    heat_map_png: String,
}

async fn ask(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AskResponse>, ApiError> {
    let request: AskRequest = parse(body)?;
    check_question_bytes(&request.question)?;
    // Refused before waiting for a worker: a bad request should not queue.
    app.asker.encode(&request.question)?;
    let source = match (request.image, request.png_base64) {
        (Some(index), None) => {
            gallery_index(&app, index)?;
            Source::Dataset(index)
        }
        (None, Some(png)) => {
            if png.len() > MAX_UPLOAD_BYTES.div_ceil(3) * 4 + 4 {
                return Err(ApiError::UploadTooLarge {
                    bytes: png.len() / 4 * 3,
                });
            }
            Source::Upload(png)
        }
        _ => return Err(ApiError::ImageChoice),
    };
    let question = request.question;
    let response = blocking(&app, move |app| {
        let (image, image_ref, ground_truth) = match source {
            Source::Dataset(index) => {
                let entry = &app.gallery[index];
                let truth = entry
                    .questions
                    .iter()
                    .find(|(q, _)| q.trim() == question.trim())
                    .map(|(_, a)| a.clone());
                let image_ref = ImageRef::Dataset {
                    index,
                    file: entry.file.clone(),
                };
                (app.dataset_image(index)?, image_ref, truth)
            }
            Source::Upload(png) => {
                let image = decode_upload(&png)?;
                let image_ref = ImageRef::Upload {
                    width: image.width,
                    height: image.height,
                };
                (image, image_ref, None)
            }
        };
        let reply = app.asker.ask(&image, &question)?;
        let png = app.asker.explain_png(&image, &question, &reply)?;
        Ok(AskResponse {
            unknown_words: reply.unknown_words(),
            heat_map: HeatMap {
                width: reply.look.heat.width,
                height: reply.look.heat.height,
                values: reply.look.heat.values.clone(),
                live_channels: reply.look.live_channels,
                channels: reply.look.channels,
                label: reply.look.value_label(),
            },
            question,
            image: image_ref,
            words: reply.words,
            answers: reply.answers,
            ground_truth,
            film: reply.film,
            heat_map_png: base64::engine::general_purpose::STANDARD.encode(png),
        })
    })
    .await?;
    Ok(Json(response))
}

/// The uploaded PNG, checked in order of cost: size, signature, then the header's pixel
/// count before the decoder allocates anything.
fn decode_upload(png_base64: &str) -> Result<RgbImage, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png_base64.trim())
        .map_err(ApiError::Base64)?;
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(ApiError::UploadTooLarge { bytes: bytes.len() });
    }
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(ApiError::NotPng);
    }
    clevr::image::decode_png_bytes(&bytes, Path::new("upload"), MAX_UPLOAD_PIXELS).map_err(ApiError::Upload)
}
