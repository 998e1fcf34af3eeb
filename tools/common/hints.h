// SPDX-License-Identifier: MIT
// Library error messages speak of settings in two ways: field names (partition_capacity,
// max_object_bytes) and hints naming `fabric-shm pool create` / `topic create` options
// ("raise with --heap-size"). A user reads them in some program that may spell the setting
// differently (the producer's pool size is --pool-size; its --size is something else) or
// have no option for it at all. Each program declares how it spells the settings it has;
// localize() rewrites a library message so that every option it names exists where the
// user is, or comes with the command that has it.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fabric_shm::cli {

/// A setting library messages refer to, by its canonical option (the one of the command
/// that configures it at creation).
struct Setting {
    std::string_view option;      ///< "--heap-size"
    std::string_view command;     ///< "fabric-shm pool create": where the option always exists
    std::string_view field;       ///< library field name in messages ("heap_bytes"), "" if none
};
/// Every setting library messages name (pool size, store geometry, topic geometry, the
/// worker's group settings).
const std::vector<Setting>& settings();

/// How one program spells settings: canonical option -> its own option ("--size" ->
/// "--pool-size"). Settings not listed are named with their command.
using OptionSpelling = std::vector<std::pair<std::string, std::string>>;

/// The programs' spellings, shared with the test that checks them against --help.
OptionSpelling spelling_pool_create();   ///< --size, --heap-size, --max-object-size, --table-entries
OptionSpelling spelling_topic_create();  ///< --partitions, --capacity, --stride, --on-full
OptionSpelling spelling_producer();      ///< --pool-size, the store options, --partitions
OptionSpelling spelling_worker();        ///< the producer's and --session-timeout, --max-attempts
OptionSpelling spelling_put();           ///< --pool-size and the store options

/// Rewrites field names into options and hint options into this program's spelling (or
/// "`COMMAND --option`" when it has none). Only hint phrases are rewritten ("raise with
/// --X", "raise --X", "lower --X", "raise the pool --X", "choose a smaller --X"), so a
/// program's own messages about its own options are left alone.
std::string localize(std::string_view message, const OptionSpelling& spelling);

/// The options named in hint phrases of a message (for tests): "--heap-size", ...
std::vector<std::string> hinted_options(std::string_view message);

}  // namespace fabric_shm::cli
