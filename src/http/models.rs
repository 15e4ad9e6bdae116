//! `GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape, and what
//! the node knows about its model without asking the worker.
//!
//! The node serves one model: its id is the model directory's name
//! (`tiny.en`), listed with the alias [`ALIAS`] (`whisper-1`) that
//! OpenAI's clients send by default.
//!
//! # The `model` form field
//! Any value is accepted and mapped to the loaded model (OpenAI's clients
//! and SDKs always send one, most often `whisper-1`, and a node serves only
//! one model, so refusing would only break them); the model that answered
//! is named in every answer's [`MODEL_HEADER`] (`X-Model`), and
//! `/v1/models` says which one it is.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::routes::{backend, Backend};
use crate::config::NodeConfig;
use crate::error_code::Code;

/// Route of the model list.
pub const MODELS_ROUTE: &str = "/v1/models";
/// Route of one model.
pub const MODEL_ROUTE: &str = "/v1/models/{id}";
/// The alias OpenAI's clients send.
pub const ALIAS: &str = "whisper-1";
/// Response header naming the model that answered a transcription or
/// translation.
pub const MODEL_HEADER: &str = "x-model";
/// `owned_by` of the models.
pub const OWNER: &str = "whisper-node";

/// The id of the loaded model: its directory's name.
pub fn model_id(config: &NodeConfig) -> String {
    config
        .model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| config.model_dir.display().to_string())
}

/// Smallest vocabulary of a multilingual Whisper model: CTranslate2's own
/// test (`is_multilingual`: the vocabulary has the language tokens).
pub const MULTILINGUAL_VOCABULARY: usize = 51_865;

/// Whether the model in `dir` is multilingual, from its vocabulary's size
/// (`vocabulary.txt`, one token per line, or `vocabulary.json`), read once
/// per directory; `None` when neither can be read (the worker then decides).
pub fn is_multilingual(dir: &Path) -> Option<bool> {
    static SEEN: Mutex<Vec<(PathBuf, Option<bool>)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, known)) = seen.iter().find(|(d, _)| d == dir) {
        return *known;
    }
    let size = std::fs::read_to_string(dir.join("vocabulary.txt"))
        .map(|t| t.lines().count())
        .or_else(|_| {
            std::fs::read(dir.join("vocabulary.json")).map(|b| {
                serde_json::from_slice::<Vec<serde_json::Value>>(&b).map_or(0, |v| v.len())
            })
        })
        .ok()
        .filter(|n| *n > 0);
    let known = size.map(|n| n >= MULTILINGUAL_VOCABULARY);
    seen.push((dir.to_path_buf(), known));
    known
}

/// A model object.
fn model_json(id: &str, created: u64) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": created, "owned_by": OWNER })
}

/// When the model was written (its `model.bin`), Unix seconds; 0 unknown.
fn created(config: &NodeConfig) -> u64 {
    std::fs::metadata(config.model_dir.join("model.bin"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`: `{"object": "list", "data": [<model>, <whisper-1>]}`.
pub(crate) async fn list<B: Backend>(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let node = backend::<B>(&req)?;
    let config = node.config();
    let (id, created) = (model_id(config), created(config));
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": [model_json(&id, created), model_json(ALIAS, created)],
    })))
}

/// `GET /v1/models/{id}`: the model or its alias, else 404
/// `model_not_found` naming the ids served.
pub(crate) async fn get<B: Backend>(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let node = backend::<B>(&req)?;
    let config = node.config();
    let id = model_id(config);
    let wanted = path.into_inner();
    if wanted == id || wanted == ALIAS {
        return Ok(HttpResponse::Ok().json(model_json(&wanted, created(config))));
    }
    Err(ApiError::new(
        Code::ModelNotFound,
        format!("the model '{wanted}' does not exist; this node serves '{id}' (alias '{ALIAS}')"),
    )
    .with_param("model"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_size_tells_english_only_from_multilingual() {
        let dir = tempfile::tempdir().unwrap();
        let en = dir.path().join("en");
        let multi = dir.path().join("multi");
        let unknown = dir.path().join("none");
        for (d, n) in [(&en, 51_864), (&multi, 51_865)] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("vocabulary.txt"), "t\n".repeat(n)).unwrap();
        }
        assert_eq!(is_multilingual(&en), Some(false));
        assert_eq!(is_multilingual(&multi), Some(true));
        assert_eq!(is_multilingual(&unknown), None);
    }

    #[test]
    fn the_model_id_is_the_directory_name() {
        let config = NodeConfig {
            model_dir: "/srv/models/large-v3".into(),
            ..NodeConfig::default()
        };
        assert_eq!(model_id(&config), "large-v3");
    }
}
