// SPDX-License-Identifier: MIT
// `fabric-shm pool export|import` (cmd_pool_archive.cpp), dispatched by `fabric-shm pool`.
#pragma once

#include <string>

#include "cli.h"

namespace fabric_shm::cli {

/// The help of both actions, for `fabric-shm pool --help`.
std::string pool_archive_help();
/// Runs `export` or `import` (action) with its arguments (argv[0]: the program and action).
int pool_archive_command(const std::string& action, int argc, char** argv, Output& out);

}  // namespace fabric_shm::cli
