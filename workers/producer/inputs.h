// SPDX-License-Identifier: MIT
// What fabric-shm-producer ingests: files and directories from the command line, paths read
// from stdin (--stdin-list), or synthetic objects (--synthetic N --size BYTES).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fabric_shm/result.h"

namespace fabric_shm::workers {

struct InputItem {
    std::string key;   ///< object key: the file's name (no directories), or synthetic-NNNNNN
    std::string path;  ///< "" for synthetic items
    uint64_t size = 0;
    uint64_t index = 0;  ///< synthetic: seed of the content
};

class InputSource {
public:
    /// Expands FILE/DIR arguments (a directory contributes its regular files, sorted,
    /// not recursively) or reads paths from stdin; or describes `synthetic` objects.
    static Result<InputSource> make(const std::vector<std::string>& args, bool stdin_list, uint64_t synthetic,
                                    uint64_t synthetic_size);
    /// Fills `item` with the next input (its strings' capacity reused: a synthetic item costs
    /// no allocation); false at the end, or when a signal interrupted the read of stdin. An
    /// error is about last_path() (the message does not repeat it), and leaves `item` as it was.
    Result<bool> next(InputItem& item);
    /// Known up front (arguments, synthetic); 0 for --stdin-list.
    uint64_t total() const { return total_; }
    /// The path next() looked at last (names the input when next() failed on it).
    const std::string& last_path() const { return last_path_; }

private:
    std::vector<std::string> paths_;
    size_t pos_ = 0;
    bool stdin_ = false;
    uint64_t synthetic_ = 0, synthetic_size_ = 0, made_ = 0, total_ = 0;
    std::string last_path_;
};

/// Fills `out` with the content of an input: the file's bytes (exactly out.size() of them;
/// an error if the file changed size; messages do not repeat the path) or deterministic synthetic text (lower-case letters,
/// a newline every 64 bytes, seeded by the index).
Status fill_input(const InputItem& item, std::span<uint8_t> out);

}  // namespace fabric_shm::workers
