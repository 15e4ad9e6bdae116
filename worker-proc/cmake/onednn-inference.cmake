# CMake toolchain file, named by CMAKE_TOOLCHAIN_FILE in .cargo/config.toml, so
# every cmake build run by a build script in this workspace reads it
# (CTranslate2, sentencepiece, oneDNN through the onednn-src crate).
#
# It only presets oneDNN's primitives to what the PyPI ctranslate2 wheels
# build (CTranslate2/python/tools/prepare_build_environment_linux.sh): only
# the two CTranslate2 calls (the Whisper encoder's conv1d, and reorders);
# the wheels' other settings (inference workload, no graph API) are
# onednn-src's `inference` feature and its default (worker-proc/Cargo.toml).
# The GEMMs CTranslate2 uses (dnnl_sgemm, dnnl_gemm_u8s8s32) are oneDNN's
# BLAS-like API, always built. onednn-src builds every primitive for training by default, which
# takes ~40 min on 2 cores; this cuts it to a fraction. CTranslate2 and
# sentencepiece do not read these variables.
#
# `set(... CACHE ...)` never overrides a value given on the command line
# (onednn-src gives the workload and the graph API there).
set(ONEDNN_ENABLE_PRIMITIVE "CONVOLUTION;REORDER" CACHE STRING "oneDNN primitives (whisper-node)")
