// SPDX-License-Identifier: MIT
// `fabric-shm group ls|describe|rm|reset|skip` (consumer groups).
#pragma once

#include <vector>

#include "cli.h"

namespace fabric_shm::cli {

void register_group_commands(std::vector<Command>& commands);

}  // namespace fabric_shm::cli
