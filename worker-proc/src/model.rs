//! Loading a model directory into a ready [`Pipeline`].
//!
//! The files are checked one by one first, so a bad directory fails with a
//! message that names the file and the problem rather than a CTranslate2
//! exception. Expected layout (a CTranslate2 conversion of a Whisper model):
//! `model.bin`, `config.json`, `vocabulary.txt` (or `vocabulary.json`),
//! `tokenizer.json` and `preprocessor_config.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::engine::{Engine, EngineSettings};
use crate::features::{FeatureConfig, FeatureExtractor};
use crate::tokenizer::WhisperTokenizer;
use crate::transcribe::Pipeline;

/// Facts about the loaded model, for the handshake and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The directory, canonicalised.
    pub path: PathBuf,
    /// The directory's name (`tiny.en`, `large-v3`…).
    pub name: String,
    /// Whether the model is multilingual.
    pub multilingual: bool,
    /// Load time, milliseconds.
    pub load_ms: u64,
}

fn need_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if !path.exists() {
        bail!("{name} is missing from {}", dir.display());
    }
    if !path.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(path)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Checks the model directory and reads its feature parameters.
pub fn check_files(dir: &Path) -> Result<FeatureConfig> {
    if !dir.exists() {
        bail!("model directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let bin = need_file(dir, "model.bin")?;
    let size = std::fs::metadata(&bin)
        .with_context(|| format!("cannot stat {}", bin.display()))?
        .len();
    if size < 1024 {
        bail!("{} is only {size} bytes: not a model", bin.display());
    }
    let config = read_json(&need_file(dir, "config.json")?)?;
    if !config.is_object() {
        bail!("config.json is not a JSON object");
    }
    if !dir.join("vocabulary.txt").is_file() && !dir.join("vocabulary.json").is_file() {
        bail!(
            "vocabulary.txt (or vocabulary.json) is missing from {}",
            dir.display()
        );
    }
    need_file(dir, "tokenizer.json")?;
    let pre = need_file(dir, "preprocessor_config.json")?;
    let value = read_json(&pre)?;
    let features: FeatureConfig = serde_json::from_value(value)
        .with_context(|| format!("{} has invalid feature parameters", pre.display()))?;
    features
        .validate()
        .with_context(|| format!("{} is not usable", pre.display()))?;
    Ok(features)
}

/// Loads everything: files, tokenizer, engine, feature extractor.
pub fn load(dir: &Path, settings: EngineSettings) -> Result<(Pipeline<Engine>, ModelInfo)> {
    let started = Instant::now();
    let feature_config = check_files(dir)?;
    let path = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let tokenizer = WhisperTokenizer::load(&path)?;
    let suppress_tokens = tokenizer.suppressed_tokens()?;
    if settings.device == ct2rs::sys::Device::CUDA {
        if let Some(missing) = crate::engine_info::cuda_unavailable() {
            bail!("--device cuda cannot run here: {missing}");
        }
    }
    let engine = Engine::load(&path, settings)?;
    if engine.n_mels() != feature_config.feature_size {
        bail!(
            "preprocessor_config.json says feature_size {} but the model expects {} mel bins",
            feature_config.feature_size,
            engine.n_mels()
        );
    }
    let multilingual = engine.is_multilingual();
    let pipeline = Pipeline {
        backend: engine,
        tokenizer,
        extractor: FeatureExtractor::new(feature_config),
        multilingual,
        suppress_tokens,
        cancel: Default::default(),
    };
    let info = ModelInfo {
        path,
        name,
        multilingual,
        load_ms: started.elapsed().as_millis() as u64,
    };
    Ok((pipeline, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("worker-proc-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_pieces_are_named() {
        let err = check_files(Path::new("/nonexistent/model")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        let dir = scratch("files");
        let msg = |d: &Path| format!("{:#}", check_files(d).unwrap_err());
        assert!(msg(&dir).contains("model.bin is missing"));
        std::fs::write(dir.join("model.bin"), vec![0u8; 4096]).unwrap();
        assert!(msg(&dir).contains("config.json is missing"));
        std::fs::write(dir.join("config.json"), "{not json").unwrap();
        assert!(msg(&dir).contains("not valid JSON"));
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        assert!(msg(&dir).contains("vocabulary.txt"));
        std::fs::write(dir.join("vocabulary.txt"), "a\n").unwrap();
        assert!(msg(&dir).contains("tokenizer.json is missing"));
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        assert!(msg(&dir).contains("preprocessor_config.json is missing"));
        std::fs::write(
            dir.join("preprocessor_config.json"),
            r#"{"sampling_rate": 8000}"#,
        )
        .unwrap();
        assert!(msg(&dir).contains("sampling_rate"), "{}", msg(&dir));
        std::fs::write(
            dir.join("preprocessor_config.json"),
            r#"{"feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30, "n_samples": 480000, "nb_max_frames": 3000}"#,
        )
        .unwrap();
        let cfg = check_files(&dir).unwrap();
        assert_eq!(cfg, FeatureConfig::default());
        assert_eq!((cfg.n_samples(), cfg.nb_max_frames()), (480_000, 3000));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
