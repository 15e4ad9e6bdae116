// storage_view.h
//
// Copyright (c) 2023-2024 Junpei Kawamoto
//
// This software is released under the MIT License.
//
// http://opensource.org/licenses/mit-license.php

#pragma once

#include <memory>
#include <sstream>
#include <string>

#include <ctranslate2/ops/gather.h>
#include <ctranslate2/storage_view.h>

#include "rust/cxx.h"

using ctranslate2::Device;
using ctranslate2::StorageView;

inline std::unique_ptr<StorageView> storage_view(
    const rust::Slice<const size_t> shape,
    const rust::Slice<float> init,
    const Device device
) {
    return std::make_unique<StorageView>(
        ctranslate2::Shape(shape.begin(), shape.end()),
        init.data(),
        device
    );
}

inline rust::String to_string(const StorageView& storage) {
    std::ostringstream oss;
    oss << storage;

    return rust::String(oss.str());
}

// whisper-node's patch: the items `indices` of a batch (along the first
// dimension), as a new storage on the same device (ops::Gather).
inline std::unique_ptr<StorageView> select_batch(
    const StorageView& storage,
    const rust::Slice<const int32_t> indices
) {
    const std::vector<int32_t> ids(indices.begin(), indices.end());
    const StorageView index(
        {static_cast<ctranslate2::dim_t>(ids.size())}, ids, storage.device()
    );
    auto out = std::make_unique<StorageView>(storage.dtype(), storage.device());
    ctranslate2::ops::Gather(0, 0)(storage, index, *out);
    return out;
}
