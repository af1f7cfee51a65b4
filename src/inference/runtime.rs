//! Locating and loading ONNX Runtime's shared library, once per process.
//!
//! Order: the path given by the operator (`model.onnxruntime` in the config or `--onnxruntime`),
//! then `ORT_DYLIB_PATH`, then the library the build fetched (`EMOTION_ORT_DYLIB`, baked in by
//! build.rs), then `libonnxruntime.so.1.31.1` beside the executable.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::ModelError;

const LIB_NAME: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The candidate paths, in the order they are tried.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    paths.extend(explicit.map(Path::to_path_buf));
    paths.extend(std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    let baked = env!("EMOTION_ORT_DYLIB");
    if !baked.is_empty() {
        paths.push(PathBuf::from(baked));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        paths.push(dir.join(LIB_NAME));
    }
    paths
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment(explicit: Option<&Path>) -> Result<&'static Environment, ModelError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let paths = candidates(explicit);
    let path = match paths.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => {
            return Err(ModelError::Runtime {
                path: paths
                    .first()
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(LIB_NAME)),
                message: format!(
                    "not found (tried {}); set ORT_DYLIB_PATH or model.onnxruntime to a {LIB_NAME}",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    };
    let runtime_err = |message: String| ModelError::Runtime {
        path: path.clone(),
        message,
    };
    let env = ort::init_from(&path)
        .map_err(|e| runtime_err(e.to_string()))?
        .with_name("emotion")
        .build()
        .map_err(|e| runtime_err(e.to_string()))?;
    tracing::info!(path = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env))
}
