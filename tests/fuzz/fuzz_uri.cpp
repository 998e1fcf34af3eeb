// SPDX-License-Identifier: MIT
// Fuzzes FabricUri::parse, the parser every notification payload and CLI URI goes through.
// Properties: never crashes; a parsed URI has valid parts and round-trips exactly through
// to_string(); make() of its parts gives the same URI; a rejection carries a typed code.
// FabricUriView::parse (the workers' copy-free parse) accepts exactly what FabricUri::parse
// accepts, with the same parts, and FabricUriView::format of them writes to_string()'s text.
// Both accept exactly what the rule written plainly accepts (tests/support/uri_rule.h), split
// the same way: the library's scan is vectorised, the rule is not.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fabric_shm/names.h"
#include "fabric_shm/uri.h"
#include "../support/uri_rule.h"

using namespace fabric_shm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Result<FabricUri> u = FabricUri::parse(text);
    Result<FabricUriView> v = FabricUriView::parse(text);
    if (u.ok() != v.ok()) std::abort();
    const auto rule = test::rule_parse(text);
    if (u.ok() != rule.has_value()) std::abort();
    if (rule && (v->pool() != rule->pool || v->bucket() != rule->bucket || v->key() != rule->key)) std::abort();
    if (!u) {
        if (u.code() != Errc::invalid_uri && u.code() != Errc::invalid_name) std::abort();
        if (u.error().message.empty()) std::abort();
        if (v.code() != u.code() || v.error().message != u.error().message) std::abort();
        return 0;
    }
    if (v->pool() != u->pool() || v->bucket() != u->bucket() || v->key() != u->key()) std::abort();
    std::string buffer;
    Result<FabricUriView> f = FabricUriView::format(buffer, u->pool(), u->bucket(), u->key());
    if (!f || buffer != u->to_string() || f->key() != u->key() || !(f->to_uri() == u.value())) std::abort();
    if (!validate_name("pool", u->pool()) || !validate_name("bucket", u->bucket())) std::abort();
    if (u->key().empty() || u->key().size() > kMaxKeyLength) std::abort();
    if (u->to_string() != text) {
        // Accepting a non-canonical spelling is allowed only if it re-parses to the same URI.
        Result<FabricUri> again = FabricUri::parse(u->to_string());
        if (!again || !(again.value() == u.value())) std::abort();
    }
    Result<FabricUri> made = FabricUri::make(u->pool(), u->bucket(), u->key());
    if (!made || !(made.value() == u.value())) std::abort();
    if (u->object_key() != u->bucket() + "/" + u->key()) std::abort();
    return 0;
}
