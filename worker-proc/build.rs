//! Finds the prebuilt engine (feature `prebuilt`, the default) and makes the
//! worker find it again at run time, without `LD_LIBRARY_PATH`.
//!
//! ct2rs (vendor/ct2rs, `system` feature) asks the linker for
//! `-lctranslate2`; this script says where that library is
//! (`WHISPER_NODE_ENGINE_DIR`, set to engine/lib by ../.cargo/config.toml,
//! filled by `make engine`) and records two run-time search paths in every
//! binary of this package (the worker and its test binaries):
//!
//! 1. `$ORIGIN/../lib/whisper-node`: the installed layout
//!    (`make install PREFIX=…` puts the binaries in PREFIX/bin and the
//!    engine in PREFIX/lib/whisper-node), relocatable;
//! 2. the engine folder itself, absolute: a worker run from target/release
//!    (or any other CARGO_TARGET_DIR) finds the library where it was linked.
//!
//! The library's own RPATH (`$ORIGIN`) finds its OpenMP runtime beside it,
//! and the CUDA libraries it loads at run time when they are put there
//! (`make cuda-libs`).
//!
//! The from-source features (`dnnl`, `ruy`, `cuda` without `prebuilt`)
//! link CTranslate2 statically; nothing is needed here then.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WHISPER_NODE_ENGINE_DIR");
    if env::var_os("CARGO_FEATURE_PREBUILT").is_none() {
        return;
    }
    let dir = match env::var_os("WHISPER_NODE_ENGINE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "WHISPER_NODE_ENGINE_DIR is not set: build from the workspace (its \
             .cargo/config.toml sets it to engine/lib) or point it at the folder \
             scripts/fetch-engine.sh filled"
        ),
    };
    let lib = dir.join("libctranslate2.so");
    if !lib.exists() {
        panic!(
            "the prebuilt engine is missing: {} does not exist. Run `make engine` \
             (scripts/fetch-engine.sh: the libctranslate2 of the PyPI ctranslate2 \
             4.8.4 wheel), or build the engine from source (README, \"Engine\").",
            lib.display()
        );
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rerun-if-changed={}", dir.join("VERSION").display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib/whisper-node");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
