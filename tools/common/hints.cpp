// SPDX-License-Identifier: MIT
// Library messages in each program's own option names (hints.h).
#include "hints.h"

#include <cctype>

namespace fabric_shm::cli {

namespace {

constexpr std::string_view kPoolCreate = "fabric-shm pool create";
constexpr std::string_view kTopicCreate = "fabric-shm topic create";
constexpr std::string_view kWorker = "fabric-shm-worker";

bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool option_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }

/// Field names (partition_capacity) -> canonical options (--capacity), at word boundaries.
std::string fields_to_options(std::string_view message) {
    std::string out;
    out.reserve(message.size() + 16);
    size_t i = 0;
    while (i < message.size()) {
        if (ident_char(message[i]) && (i == 0 || !ident_char(message[i - 1]))) {
            size_t j = i;
            while (j < message.size() && ident_char(message[j])) ++j;
            const std::string_view word = message.substr(i, j - i);
            bool replaced = false;
            for (const Setting& s : settings()) {
                if (!s.field.empty() && word == s.field) {
                    out += s.option;
                    replaced = true;
                    break;
                }
            }
            if (!replaced) out += word;
            i = j;
            continue;
        }
        out += message[i++];
    }
    return out;
}

const Setting* find_setting(std::string_view option) {
    for (const Setting& s : settings())
        if (s.option == option) return &s;
    return nullptr;
}

/// Calls fn(begin, end) for every "--option" of a setting inside a hint phrase: from a hint
/// word ("raise", "lower", "smaller") to the end of its clause (')', ';', '.' or ':').
template <class Fn>
void for_each_hinted(std::string_view m, Fn&& fn) {
    bool in_hint = false;
    size_t i = 0;
    while (i < m.size()) {
        const char c = m[i];
        if (c == ')' || c == ';' || c == ':' || (c == '.' && (i + 1 == m.size() || m[i + 1] == ' '))) {
            in_hint = false;
            ++i;
            continue;
        }
        if (std::isalpha(static_cast<unsigned char>(c)) && (i == 0 || !ident_char(m[i - 1]))) {
            size_t j = i;
            while (j < m.size() && ident_char(m[j])) ++j;
            const std::string_view word = m.substr(i, j - i);
            if (word == "raise" || word == "lower" || word == "smaller") in_hint = true;
            i = j;
            continue;
        }
        if (in_hint && c == '-' && i + 2 < m.size() && m[i + 1] == '-' && (i == 0 || m[i - 1] != '-')) {
            size_t j = i + 2;
            while (j < m.size() && option_char(m[j])) ++j;
            if (find_setting(m.substr(i, j - i))) fn(i, j);
            i = j;
            continue;
        }
        ++i;
    }
}

}  // namespace

const std::vector<Setting>& settings() {
    static const std::vector<Setting> all = {
        {"--size", kPoolCreate, ""},
        {"--heap-size", kPoolCreate, "heap_bytes"},
        {"--max-object-size", kPoolCreate, "max_object_bytes"},
        {"--table-entries", kPoolCreate, "table_entries"},
        {"--partitions", kTopicCreate, "num_partitions"},
        {"--capacity", kTopicCreate, "partition_capacity"},
        {"--stride", kTopicCreate, "partition_stride"},
        {"--on-full", kTopicCreate, "on_full"},
        {"--session-timeout", kWorker, "session_timeout"},
        {"--max-attempts", kWorker, "max_attempts"},
    };
    return all;
}

OptionSpelling spelling_pool_create() {
    return {{"--size", "--size"}, {"--heap-size", "--heap-size"}, {"--max-object-size", "--max-object-size"},
            {"--table-entries", "--table-entries"}};
}

OptionSpelling spelling_topic_create() {
    return {{"--partitions", "--partitions"}, {"--capacity", "--capacity"}, {"--stride", "--stride"},
            {"--on-full", "--on-full"}};
}

OptionSpelling spelling_producer() {
    return {{"--size", "--pool-size"}, {"--heap-size", "--heap-size"}, {"--max-object-size", "--max-object-size"},
            {"--table-entries", "--table-entries"}, {"--partitions", "--partitions"}};
}

OptionSpelling spelling_worker() {
    OptionSpelling s = spelling_producer();
    s.emplace_back("--session-timeout", "--session-timeout");
    s.emplace_back("--max-attempts", "--max-attempts");
    return s;
}

OptionSpelling spelling_put() {
    return {{"--size", "--pool-size"}, {"--heap-size", "--heap-size"}, {"--max-object-size", "--max-object-size"},
            {"--table-entries", "--table-entries"}};
}

std::string localize(std::string_view message, const OptionSpelling& spelling) {
    const std::string m = fields_to_options(message);
    std::string out;
    size_t copied = 0;
    for_each_hinted(m, [&](size_t begin, size_t end) {
        const std::string_view option = std::string_view(m).substr(begin, end - begin);
        out.append(m, copied, begin - copied);
        copied = end;
        for (const auto& [canonical, own] : spelling) {
            if (canonical == option) {
                out += own;
                return;
            }
        }
        const Setting* s = find_setting(option);
        out += "`" + std::string(s->command) + " " + std::string(option) + "`";
    });
    out.append(m, copied, std::string::npos);
    return out;
}

std::vector<std::string> hinted_options(std::string_view message) {
    const std::string m = fields_to_options(message);
    std::vector<std::string> found;
    for_each_hinted(m, [&](size_t begin, size_t end) { found.push_back(m.substr(begin, end - begin)); });
    return found;
}

}  // namespace fabric_shm::cli
