//! Build steps: gRPC code generation without a system `protoc` (protox parses the .proto files),
//! the descriptor set for server reflection, and obtaining ONNX Runtime's shared library.
//!
//! ONNX Runtime: unless `ORT_DYLIB_PATH` names a library to use, the build fetches the
//! `onnxruntime==1.31.1` wheel from the Python package index with `pip download` (once; it is kept
//! under `target/onnxruntime-1.31.1/`) and extracts `libonnxruntime.so.1.31.1`. The path is baked into
//! the binary as its default; operators can point elsewhere at run time (see `src/inference/runtime.rs`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const ORT_VERSION: &str = "1.31.1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["emotion/v1/emotion.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("emotion_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Turns are read with their string fields as bytes and frames that do not decode are the
    // client's fault: see src/grpc/wire.rs. The published contract (and reflection) is unchanged.
    tonic_prost_build::configure()
        .extern_path(".emotion.v1.TurnRequest", "crate::grpc::wire::TurnRequest")
        .codec_path("crate::grpc::wire::WireCodec")
        .compile_fds(fds)?;

    println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
    let lib = match env::var_os("ORT_DYLIB_PATH") {
        Some(path) => PathBuf::from(path),
        None => fetch_onnxruntime(&out).unwrap_or_else(|e| {
            println!("cargo:warning=could not obtain ONNX Runtime {ORT_VERSION}: {e}");
            println!(
                "cargo:warning=set ORT_DYLIB_PATH to a libonnxruntime.so {ORT_VERSION} at run time"
            );
            PathBuf::new()
        }),
    };
    println!("cargo:rustc-env=EMOTION_ORT_DYLIB={}", lib.display());
    Ok(())
}

/// The library under `<target>/onnxruntime-<version>/`, fetched from the `onnxruntime` wheel if absent.
fn fetch_onnxruntime(out_dir: &Path) -> Result<PathBuf, String> {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; keep the library beside the profiles so
    // debug and release builds share one download.
    let target = out_dir
        .ancestors()
        .nth(4)
        .ok_or("unexpected OUT_DIR layout")?;
    let dir = target.join(format!("onnxruntime-{ORT_VERSION}"));
    let lib = dir.join(format!("libonnxruntime.so.{ORT_VERSION}"));
    println!("cargo:rerun-if-changed={}", lib.display());
    if lib.is_file() {
        return Ok(lib);
    }
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch_wheel_member.py");
    println!("cargo:rerun-if-changed={}", script.display());
    let status = Command::new(&python)
        .arg(&script)
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg(format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}"))
        .arg(&lib)
        .status()
        .map_err(|e| format!("running {python}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "fetching libonnxruntime from the onnxruntime=={ORT_VERSION} wheel failed ({status})"
        ));
    }
    Ok(lib)
}
