// SPDX-License-Identifier: MIT
#include "archive_format.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "fabric_shm/object_store.h"

namespace fabric_shm::cli::archive {
namespace {

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(std::string_view in) {
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
        for (int s = 18; s >= 0; s -= 6) out += kBase64[(v >> s) & 63];
    }
    if (i < in.size()) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16;
        if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
        out += kBase64[(v >> 18) & 63];
        out += kBase64[(v >> 12) & 63];
        out += i + 1 < in.size() ? kBase64[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::optional<std::string> unbase64(std::string_view in) {
    if (in.size() % 4 != 0) return std::nullopt;
    std::string out;
    out.reserve(in.size() / 4 * 3);
    for (size_t i = 0; i < in.size(); i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (size_t j = 0; j < 4; ++j) {
            const char c = in[i + j];
            uint32_t d = 0;
            if (c == '=' && i + 4 == in.size() && j >= 2) {
                ++pad;
            } else if (pad > 0) {
                return std::nullopt;  // data after padding
            } else if (const char* p = std::strchr(kBase64, c); p && c != '\0') {
                d = uint32_t(p - kBase64);
            } else {
                return std::nullopt;
            }
            v = v << 6 | d;
        }
        out += char(v >> 16);
        if (pad < 2) out += char(v >> 8 & 0xff);
        if (pad < 1) out += char(v & 0xff);
    }
    return out;
}

// Exactly what nlohmann::json accepts when it writes a string (it refuses overlong forms and
// surrogates too), so a string that passes never makes dump() throw.
bool valid_utf8(std::string_view s) {
    try {
        (void)nlohmann::json(std::string(s)).dump();
        return true;
    } catch (const nlohmann::json::type_error&) {
        return false;
    }
}

}  // namespace

nlohmann::json bytes_json(std::string_view bytes) {
    if (valid_utf8(bytes)) return std::string(bytes);
    return nlohmann::json{{"base64", base64(bytes)}};
}

Result<std::string> json_bytes(const nlohmann::json& value, std::string_view what) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.size() == 1 && value.contains("base64") && value["base64"].is_string())
        if (auto b = unbase64(value["base64"].get<std::string>())) return *b;
    return make_error(Errc::invalid_argument, std::string(what) + " is neither a string nor {\"base64\": \"...\"}");
}

// ---- Writer -------------------------------------------------------------------------

Result<Writer> Writer::open(const std::string& path) {
    if (path == "-") {
        Writer w(stdout, "standard output", false);
        FABRIC_TRY(w.put(kMagic, sizeof kMagic));
        return w;
    }
    std::FILE* f = std::fopen(path.c_str(), "wbx");  // x: never overwrite an archive
    if (!f) return errno_error(errno, "create archive '" + path + "'");
    Writer w(f, path, true);
    FABRIC_TRY(w.put(kMagic, sizeof kMagic));
    return w;
}

Writer::Writer(Writer&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)), path_(std::move(other.path_)), owned_(other.owned_),
      records_(other.records_) {}

Writer::~Writer() {
    if (file_ && owned_) std::fclose(file_);
}

Status Writer::put(const void* data, size_t n) {
    if (n && std::fwrite(data, 1, n, file_) != n) return errno_error(errno, "write archive '" + path_ + "'");
    return {};
}

Status Writer::write(nlohmann::json header, std::span<const uint8_t> payload) {
    header["crc32"] = crc32(payload.data(), payload.size());
    const std::string h = header.dump();
    if (h.size() > kMaxHeaderBytes)
        return make_error(Errc::invalid_argument, "archive record header of " + std::to_string(h.size()) +
                                                      " bytes exceeds the limit of " + std::to_string(kMaxHeaderBytes));
    const uint32_t hn = uint32_t(h.size());
    const uint64_t pn = payload.size();
    uint8_t le[8];
    for (int i = 0; i < 4; ++i) le[i] = uint8_t(hn >> (8 * i));
    FABRIC_TRY(put(le, 4));
    FABRIC_TRY(put(h.data(), h.size()));
    for (int i = 0; i < 8; ++i) le[i] = uint8_t(pn >> (8 * i));
    FABRIC_TRY(put(le, 8));
    FABRIC_TRY(put(payload.data(), payload.size()));
    ++records_;
    return {};
}

Status Writer::finish() {
    const uint64_t n = records_;
    FABRIC_TRY(write({{"type", "end"}, {"records", n}}));
    if (std::fflush(file_) != 0) return errno_error(errno, "write archive '" + path_ + "'");
    if (owned_) {
        const int rc = std::fclose(file_);
        file_ = nullptr;
        if (rc != 0) return errno_error(errno, "close archive '" + path_ + "'");
    }
    return {};
}

// ---- Reader -------------------------------------------------------------------------

Result<Reader> Reader::open(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return errno_error(errno, "open archive '" + path + "'");
    struct stat st {};
    if (::fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        std::fclose(f);
        return make_error(Errc::invalid_argument,
                          "archive '" + path + "' is not a regular file (import reads it more than once)");
    }
    Reader r(f, path, uint64_t(st.st_size));
    FABRIC_TRY(r.rewind());
    return r;
}

Reader::Reader(Reader&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)), path_(std::move(other.path_)), size_(other.size_),
      records_(other.records_), ended_(other.ended_) {}

Reader::~Reader() {
    if (file_) std::fclose(file_);
}

Error Reader::corrupt(const std::string& what) const {
    return make_error(Errc::corrupt, "archive '" + path_ + "': " + what);
}

Status Reader::get(void* data, size_t n) {
    if (n && std::fread(data, 1, n, file_) != n)
        return std::ferror(file_) ? errno_error(errno, "read archive '" + path_ + "'")
                                  : Status(corrupt("ends in the middle of record " + std::to_string(records_ + 1) +
                                                   " (truncated)"));
    return {};
}

Status Reader::rewind() {
    if (std::fseek(file_, 0, SEEK_SET) != 0) return errno_error(errno, "seek archive '" + path_ + "'");
    char magic[sizeof kMagic];
    FABRIC_TRY(get(magic, sizeof magic));
    if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
        return corrupt("not a fabric-shm pool archive (no FSHMARC1 at its start)");
    records_ = 0;
    ended_ = false;
    return {};
}

Result<bool> Reader::next(Record* out, const std::function<bool(const nlohmann::json&)>& want_payload) {
    if (ended_) return false;
    const long at = std::ftell(file_);
    if (at < 0) return errno_error(errno, "read archive '" + path_ + "'");
    if (uint64_t(at) == size_) return corrupt("ends after " + std::to_string(records_) + " records without its end record (truncated)");
    uint8_t le[8];
    FABRIC_TRY(get(le, 4));
    uint32_t hn = 0;
    for (int i = 0; i < 4; ++i) hn |= uint32_t(le[i]) << (8 * i);
    if (hn > kMaxHeaderBytes || uint64_t(at) + 4 + hn > size_)
        return corrupt("record " + std::to_string(records_ + 1) + " declares a header of " + std::to_string(hn) +
                       " bytes (limit " + std::to_string(kMaxHeaderBytes) + ", file " + std::to_string(size_) + " bytes)");
    std::string h(hn, '\0');
    FABRIC_TRY(get(h.data(), hn));
    FABRIC_TRY(get(le, 8));
    uint64_t pn = 0;
    for (int i = 0; i < 8; ++i) pn |= uint64_t(le[i]) << (8 * i);
    const uint64_t payload_at = uint64_t(at) + 4 + hn + 8;
    if (pn > kMaxPayloadBytes || payload_at + pn > size_)
        return corrupt("record " + std::to_string(records_ + 1) + " declares a payload of " + std::to_string(pn) +
                       " bytes (limit " + std::to_string(kMaxPayloadBytes) + ", " +
                       std::to_string(size_ - std::min(size_, payload_at)) + " bytes left in the file)");
    out->header = nlohmann::json::parse(h, nullptr, false);
    if (!out->header.is_object() || !out->header.contains("type") || !out->header["type"].is_string() ||
        !out->header.contains("crc32") || !out->header["crc32"].is_number_unsigned())
        return corrupt("record " + std::to_string(records_ + 1) + " has no valid header (a JSON object with type and crc32)");
    out->payload.clear();
    out->payload_bytes = pn;
    if (want_payload(out->header)) {
        out->payload.resize(pn);
        FABRIC_TRY(get(out->payload.data(), pn));
        if (crc32(out->payload.data(), pn) != out->header["crc32"].get<uint32_t>())
            return corrupt("record " + std::to_string(records_ + 1) + " (" + out->header["type"].get<std::string>() +
                           "): payload CRC mismatch");
    } else if (std::fseek(file_, long(pn), SEEK_CUR) != 0) {
        return errno_error(errno, "seek archive '" + path_ + "'");
    }
    if (out->header["type"] == "end") {
        const auto& n = out->header["records"];
        if (!n.is_number_unsigned() || n.get<uint64_t>() != records_)
            return corrupt("its end record counts " + n.dump() + " records, the file holds " + std::to_string(records_));
        if (uint64_t(std::ftell(file_)) != size_) return corrupt("has bytes after its end record");
        ended_ = true;
        return false;
    }
    ++records_;
    return true;
}

}  // namespace fabric_shm::cli::archive
