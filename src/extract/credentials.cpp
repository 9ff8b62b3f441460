#include "epc/extract/credentials.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string_view>

#include "epc/common/types.hpp"

namespace epc {

namespace {

// Also '\r': a file written on Windows ends every line with one.
std::string trim(std::string_view s) {
    std::size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return "";
    std::size_t e = s.find_last_not_of(" \t\r\n");
    return std::string(s.substr(b, e - b + 1));
}

std::string unquote(std::string value) {
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
        return value.substr(1, value.size() - 2);
    return value;
}

void set_field(Credentials& c, const std::string& key, const std::string& value) {
    if (key == "EPC_TOKEN") c.token = value;
    else if (key == "EPC_API_EMAIL") c.email = value;
    else if (key == "EPC_API_KEY") c.api_key = value;
    else if (key == "EPC_LOGIN_TOKEN") c.login_token = value;
}

}  // namespace

Credentials credentials_from_env() {
    auto get = [](const char* name) {
        const char* v = std::getenv(name);
        return std::string(v ? v : "");
    };
    return Credentials{get("EPC_TOKEN"), get("EPC_API_EMAIL"), get("EPC_API_KEY"), get("EPC_LOGIN_TOKEN")};
}

Credentials credentials_from_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw Error(exit_usage, "cannot read the credentials file " + path + ": " + std::strerror(errno));
    Credentials c;
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        std::string text = trim(line);
        if (text.empty() || text[0] == '#') continue;
        if (text.rfind("export ", 0) == 0) text = trim(text.substr(7));
        std::size_t eq = text.find('=');
        if (eq == std::string::npos)
            throw Error(exit_usage,
                        "credentials file " + path + ", line " + std::to_string(number) + ": expected KEY=VALUE");
        set_field(c, trim(text.substr(0, eq)), unquote(trim(text.substr(eq + 1))));
    }
    return c;
}

Credentials merge_credentials(Credentials base, const Credentials& overrides) {
    if (!overrides.token.empty()) base.token = overrides.token;
    if (!overrides.email.empty()) base.email = overrides.email;
    if (!overrides.api_key.empty()) base.api_key = overrides.api_key;
    if (!overrides.login_token.empty()) base.login_token = overrides.login_token;
    return base;
}

}  // namespace epc
